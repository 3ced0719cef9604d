use super::*;
use crate::config::parse::{from_yaml, ParseOptions};

fn policy(yaml: &str) -> CorsPolicy {
    let proto: CorsPolicyProto = from_yaml(yaml, ParseOptions::default()).expect("parses");
    let mut errs = ConfigErrors::default();
    let p = CorsPolicy::from_proto(&proto, &Path::root("cors"), &mut errs);
    assert!(errs.is_empty(), "{errs}");
    p.expect("valid")
}

fn request(method: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().method(method).uri("/api");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("request").into_parts().0
}

const ROUTE: &str = r#"
allow_origin_string_match: [{ exact: "https://app.example" }, { suffix: ".trusted.example" }]
allow_methods: "GET, POST"
allow_headers: "*"
expose_headers: "x-trace"
allow_credentials: true
"#;
const VHOST: &str = r#"
allow_origin_string_match: [{ exact: "https://other.example" }]
max_age: "600"
allow_methods: "PUT"
"#;

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

#[test]
fn a_preflight_is_answered_with_fields_from_the_most_specific_level_that_sets_them() {
    let (route, vhost) = (policy(ROUTE), policy(VHOST));
    let store = Store::new();
    let f = CorsFilter::new(&store, "ingress");
    let req = request(
        "OPTIONS",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-a, x-b"),
        ],
    );
    let Decision::Preflight(resp) = f.decode(&[&route, &vhost], &req) else {
        panic!("a preflight");
    };
    let h = resp.headers();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(h, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        header(h, "access-control-allow-methods"),
        Some("GET, POST"),
        "the route's"
    );
    assert_eq!(
        header(h, "access-control-allow-headers"),
        Some("x-a, x-b"),
        "`*` echoes"
    );
    assert_eq!(
        header(h, "access-control-max-age"),
        Some("600"),
        "the vhost's"
    );
    assert_eq!(header(h, "access-control-allow-credentials"), Some("true"));
    assert_eq!(store.counter("http.ingress.cors.origin_valid").get(), 1);
}

#[test]
fn a_simple_request_gets_allow_origin_on_its_response_and_others_nothing() {
    let route = policy(ROUTE);
    let store = Store::new();
    let f = CorsFilter::new(&store, "p");
    let req = request("GET", &[("origin", "https://x.trusted.example")]);
    let Decision::Respond(add) = f.decode(&[&route], &req) else {
        panic!("a CORS request");
    };
    assert_eq!(
        header(&add, "access-control-allow-origin"),
        Some("https://x.trusted.example")
    );
    assert_eq!(
        header(&add, "access-control-expose-headers"),
        Some("x-trace")
    );
    let evil = request("GET", &[("origin", "https://evil.example")]);
    assert!(matches!(f.decode(&[&route], &evil), Decision::Continue));
    assert!(matches!(
        f.decode(&[&route], &request("GET", &[])),
        Decision::Continue
    ));
    assert!(
        matches!(f.decode(&[], &req), Decision::Continue),
        "no policy, no CORS"
    );
    assert_eq!(store.counter("http.p.cors.origin_invalid").get(), 1);
}

#[test]
fn a_preflight_from_an_unknown_origin_is_forwarded_unless_configured_otherwise() {
    let store = Store::new();
    let f = CorsFilter::new(&store, "p");
    let req = request(
        "OPTIONS",
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "GET"),
        ],
    );
    assert!(matches!(
        f.decode(&[&policy(ROUTE)], &req),
        Decision::Continue
    ));
    let strict = policy(&format!("{ROUTE}forward_not_matching_preflights: false\n"));
    let Decision::Preflight(resp) = f.decode(&[&strict], &req) else {
        panic!("answered here");
    };
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}

#[test]
fn filter_enabled_zero_turns_the_policy_off_and_shadow_only_counts() {
    let store = Store::new();
    let f = CorsFilter::new(&store, "p");
    let off = policy(&format!(
        "{ROUTE}filter_enabled: {{ default_value: {{ numerator: 0 }} }}\nshadow_enabled: {{ default_value: {{ numerator: 100 }} }}\n"
    ));
    let req = request("GET", &[("origin", "https://app.example")]);
    assert!(matches!(f.decode(&[&off], &req), Decision::Continue));
    assert_eq!(
        store.counter("http.p.cors.origin_valid").get(),
        1,
        "shadow mode still counts"
    );
}
