//! Direct responses.

use http::StatusCode;
use http_body_util::BodyExt;

use super::*;

fn respond(route_yaml: &str, r: &Parts) -> http::Response<crate::http::body::BoxBody> {
    let t = routes(&format!(
        "  - name: d\n    match: {{prefix: /}}\n{route_yaml}"
    ));
    let s = t.select(r).expect("selected");
    direct(&s).response(r)
}

async fn body(resp: http::Response<crate::http::body::BoxBody>) -> Vec<u8> {
    resp.into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec()
}

#[tokio::test]
async fn inline_body_is_plain_text() {
    let resp = respond(
        "    direct_response: {status: 200, body: {inline_string: hello}}\n",
        &get("/", "h"),
    );
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/plain"[..])
    );
    assert_eq!(body(resp).await, b"hello");

    let resp = respond(
        "    direct_response: {status: 418, body: {inline_bytes: aGk=}}\n",
        &get("/", "h"),
    );
    assert_eq!(resp.status().as_u16(), 418);
    assert_eq!(body(resp).await, b"hi");
}

#[tokio::test]
async fn empty_body_has_no_content_type() {
    let resp = respond("    direct_response: {status: 503}\n", &get("/", "h"));
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().get("content-type").is_none());
    assert!(body(resp).await.is_empty());
}

#[test]
fn redirect_statuses_point_at_the_request_itself() {
    let resp = respond(
        "    direct_response: {status: 301}\n",
        &get("/d301?q=1", "a.com:8080"),
    );
    assert_eq!(
        resp.headers().get("location").map(|v| v.as_bytes()),
        Some(&b"http://a.com:8080/d301?q=1"[..])
    );
    let resp = respond("    direct_response: {status: 200}\n", &get("/", "a.com"));
    assert!(resp.headers().get("location").is_none());
}

#[tokio::test]
async fn body_from_a_file_is_read_at_config_time() {
    let dir = std::env::temp_dir().join(format!("remora-route-direct-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("body.txt");
    std::fs::write(&file, "from file").expect("write");
    let yaml = format!(
        "    direct_response: {{status: 200, body: {{filename: '{}'}}}}\n",
        file.display()
    );
    let resp = respond(&yaml, &get("/", "h"));
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(body(resp).await, b"from file");
}
