//! HAProxy configurations equivalent to the Envoy bootstraps: one thread, `http-reuse always`.

use super::{Role, Setup};

/// haproxy.cfg for `role`; None when there is no equivalent (config scale).
pub fn config(role: &Role, setup: &Setup<'_>) -> Option<String> {
    let b = setup.backend_http.port();
    let nofile = setup.nofile;
    let maxconn = max_connections(nofile);
    let mut c = format!(
        "global\n  nbthread 1\n  ulimit-n {nofile}\n  maxconn {maxconn}\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 600s\n  timeout server 600s\n\
         \x20 timeout http-keep-alive 600s\n  http-reuse always\n"
    );
    match role {
        Role::Single { http1, h2c, tcp } => c.push_str(&format!(
            "frontend http1\n  bind 127.0.0.1:{http1}\n  default_backend backend\n\
             frontend h2c\n  bind 127.0.0.1:{h2c} proto h2\n  default_backend backend\n\
             backend backend\n  server s1 127.0.0.1:{b}\n\
             listen tcp\n  mode tcp\n  bind 127.0.0.1:{tcp}\n  server s1 127.0.0.1:{}\n",
            setup.backend_tcp.port()
        )),
        Role::MeshOutbound { listen, inbound } => {
            let p = setup.pki;
            c.push_str(&format!(
                "frontend outbound\n  bind 127.0.0.1:{listen}\n  default_backend inbound\n\
                 backend inbound\n  server s1 127.0.0.1:{inbound} ssl crt {} ca-file {} verify required \
                 verifyhost {dns} sni str({dns})\n",
                p.outbound.combined.display(),
                p.root.display(),
                dns = crate::pki::INBOUND_DNS
            ));
        }
        Role::MeshInbound { listen } => {
            let p = setup.pki;
            c.push_str(&format!(
                "frontend inbound\n  bind 127.0.0.1:{listen} ssl crt {} ca-file {} verify required\n\
                 \x20 default_backend backend\nbackend backend\n  server s1 127.0.0.1:{b}\n",
                p.inbound.combined.display(),
                p.root.display()
            ));
        }
        Role::Scale { .. } | Role::Xds { .. } => return None,
    }
    Some(c)
}

/// HAProxy refuses to start when `maxconn` needs more than `ulimit-n` allows (two descriptors per
/// connection and a few of its own).
pub fn max_connections(nofile: u64) -> u64 {
    nofile.saturating_sub(100) / 2
}
