//! nginx configurations equivalent to the Envoy bootstraps: one worker, keep-alive upstreams.

use std::path::Path;

use super::{Role, Setup};

/// Where Debian's libnginx-mod-stream puts the TCP proxy module.
pub const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// nginx.conf for `role` and the ports it cannot serve (with why); None when nginx has no
/// equivalent (config scale).
pub fn config(role: &Role, setup: &Setup<'_>, dir: &Path) -> Option<(String, Vec<(u16, String)>)> {
    let d = dir.display();
    let has_stream = Path::new(STREAM_MODULE).exists();
    let needs_stream = matches!(role, Role::Single { .. });
    let mut c = String::new();
    if needs_stream && has_stream {
        c.push_str(&format!("load_module {STREAM_MODULE};\n"));
    }
    c.push_str(&format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         worker_rlimit_nofile {n};\nevents {{ worker_connections {n}; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         \x20 keepalive_requests 100000000;\n  keepalive_timeout 600s;\n\
         \x20 upstream backend {{ server 127.0.0.1:{b}; keepalive 256; keepalive_requests 100000000; keepalive_timeout 600s; }}\n",
        b = setup.backend_http.port(),
        n = setup.nofile
    ));
    let plain = "proxy_http_version 1.1; proxy_set_header Connection \"\";";
    match role {
        Role::Single { http1, h2c, tcp } => {
            c.push_str(&format!(
                "  server {{ listen 127.0.0.1:{http1}; location / {{ proxy_pass http://backend; {plain} }} }}\n\
                 \x20 server {{ listen 127.0.0.1:{h2c} http2; location / {{ proxy_pass http://backend; {plain} }} }}\n}}\n"
            ));
            if has_stream {
                c.push_str(&format!(
                    "stream {{ server {{ listen 127.0.0.1:{tcp}; proxy_pass 127.0.0.1:{}; }} }}\n",
                    setup.backend_tcp.port()
                ));
            }
        }
        Role::MeshOutbound { listen, inbound } => {
            let p = setup.pki;
            c.push_str(&format!(
                "  upstream inbound {{ server 127.0.0.1:{inbound}; keepalive 256; keepalive_requests 100000000; keepalive_timeout 600s; }}\n\
                 \x20 server {{ listen 127.0.0.1:{listen}; location / {{ proxy_pass https://inbound; {plain}\n\
                 \x20   proxy_ssl_certificate {}; proxy_ssl_certificate_key {};\n\
                 \x20   proxy_ssl_trusted_certificate {}; proxy_ssl_verify on; proxy_ssl_name {};\n\
                 \x20   proxy_ssl_server_name on; proxy_ssl_session_reuse on; }} }}\n}}\n",
                p.outbound.chain.display(),
                p.outbound.key.display(),
                p.root.display(),
                crate::pki::INBOUND_DNS
            ));
        }
        Role::MeshInbound { listen } => {
            let p = setup.pki;
            c.push_str(&format!(
                "  server {{ listen 127.0.0.1:{listen} ssl;\n    ssl_certificate {}; ssl_certificate_key {};\n\
                 \x20   ssl_client_certificate {}; ssl_verify_client on;\n\
                 \x20   location / {{ proxy_pass http://backend; {plain} }} }}\n}}\n",
                p.inbound.chain.display(),
                p.inbound.key.display(),
                p.root.display()
            ));
        }
        Role::Scale { .. } | Role::Xds { .. } => return None,
    }
    let mut unserved = Vec::new();
    if let (Role::Single { tcp, .. }, false) = (role, has_stream) {
        // Still usable for the HTTP workloads; the TCP one reports the missing module.
        unserved.push((
            *tcp,
            "TCP proxying needs nginx's stream module: apt-get install libnginx-mod-stream"
                .to_string(),
        ));
    }
    Some((c, unserved))
}
