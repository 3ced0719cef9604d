//! `remora probe URL`: one HTTP GET that exits 0 on a 2xx answer, for container health checks
//! (Docker `HEALTHCHECK`, Kubernetes `exec` probes) in images that have no curl.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}: only http://host:port/path URLs are supported")]
    Url(String),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] http::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answered {0}")]
    Status(http::StatusCode),
}

/// GETs `url` (plain HTTP) and succeeds on a 2xx status.
pub async fn run(url: &str, timeout: Duration) -> Result<http::StatusCode, ProbeError> {
    tokio::time::timeout(timeout, get(url))
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
}

async fn get(url: &str) -> Result<http::StatusCode, ProbeError> {
    let uri: http::Uri = url.parse().map_err(|_| ProbeError::Url(url.into()))?;
    if uri.scheme_str() != Some("http") {
        return Err(ProbeError::Url(url.into()));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| ProbeError::Url(url.into()))?
        .clone();
    let addr = if authority.port().is_some() {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|source| ProbeError::Connect { addr, source })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let req = http::Request::get(path)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::USER_AGENT, "remora-probe")
        .body(Empty::<Bytes>::new())?;
    let status = sender.send_request(req).await?.status();
    if status.is_success() {
        Ok(status)
    } else {
        Err(ProbeError::Status(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rejects_other_schemes_and_reports_refusals() {
        let e = run("https://127.0.0.1:1/", Duration::from_secs(1))
            .await
            .expect_err("https");
        assert!(matches!(e, ProbeError::Url(_)), "{e}");
        // Nothing listens on port 1 of loopback.
        let e = run("http://127.0.0.1:1/healthz/ready", Duration::from_secs(1))
            .await
            .expect_err("refused");
        assert!(
            e.to_string().starts_with("connecting to 127.0.0.1:1"),
            "{e}"
        );
    }
}
