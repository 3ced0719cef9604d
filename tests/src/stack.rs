//! A fixture brought to life: the backends its placeholders ask for, the rendered bootstrap and the
//! proxy running it.
//!
//! Placeholders: `listener_port*`, `admin_port`, `dead_port*` get free ports; `backend_X` an HTTP
//! echo backend named `X`; `grpc_X` a gRPC-shaped h2c backend; `tcp_X` a TCP echo backend named
//! `X`; `file_X` a path in the stack's
//! scratch directory (access logs).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::backend::{GrpcBackend, HttpBackend, TcpEcho};
use crate::ports;
use crate::proxy::{Kind, Proxy, StartOptions};
use crate::tempdir::TempDir;
use crate::template::{placeholders, render, Vars};

/// Backends, ports and files for one template, before any proxy runs.
pub struct Env {
    pub vars: Vars,
    pub http: BTreeMap<String, HttpBackend>,
    pub tcp: Vec<(String, TcpEcho)>,
    pub grpc: Vec<(String, GrpcBackend)>,
    pub dir: TempDir,
}

impl Env {
    pub async fn for_template(template: &str) -> Env {
        let mut env = Env {
            vars: Vars::new(),
            http: BTreeMap::new(),
            tcp: Vec::new(),
            grpc: Vec::new(),
            dir: TempDir::new("stack"),
        };
        for name in placeholders(template) {
            if let Some(b) = name.strip_prefix("backend_") {
                let backend = HttpBackend::start(b).await;
                env.vars.set(&name, backend.port());
                env.http.insert(b.to_string(), backend);
            } else if let Some(g) = name.strip_prefix("grpc_") {
                let backend = GrpcBackend::start().await;
                env.vars.set(&name, backend.port());
                env.grpc.push((g.to_string(), backend));
            } else if let Some(t) = name.strip_prefix("tcp_") {
                let echo = TcpEcho::start().await;
                env.vars.set(&name, echo.port());
                env.tcp.push((t.to_string(), echo));
            } else if let Some(f) = name.strip_prefix("file_") {
                let path = env.dir.join(f);
                env.vars.set(&name, path.display());
            } else if name.starts_with("listener_port")
                || name == "admin_port"
                || name.starts_with("dead_port")
            {
                env.vars.set(&name, ports::free_port());
            } else {
                panic!("unknown placeholder {{{{{name}}}}}");
            }
        }
        env
    }

    /// The loopback address of a port placeholder.
    pub fn addr(&self, placeholder: &str) -> std::net::SocketAddr {
        let port: u16 = self
            .vars
            .get(placeholder)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the fixture does not use {{{{{placeholder}}}}}"));
        ports::loopback(port)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn backend(&self, name: &str) -> &HttpBackend {
        self.http
            .get(name)
            .unwrap_or_else(|| panic!("the fixture has no backend_{name}"))
    }
}

/// A running proxy with its environment.
pub struct Stack {
    pub env: Env,
    pub proxy: Proxy,
}

impl Stack {
    /// Start `kind` on `tests/configs/<rel>`.
    pub async fn start(kind: Kind, rel: &str) -> Stack {
        Self::start_with(kind, rel, StartOptions::default()).await
    }

    pub async fn start_with(kind: Kind, rel: &str, opts: StartOptions) -> Stack {
        Self::start_text(kind, &crate::fixture(rel), opts).await
    }

    /// Start `kind` on a template given as text (a fixture changed by the test).
    pub async fn start_text(kind: Kind, template: &str, opts: StartOptions) -> Stack {
        let template = template.to_string();
        let env = Env::for_template(&template).await;
        let config = render(&template, &env.vars);
        let proxy = Proxy::start_with(kind, &config, opts).await;
        Stack { env, proxy }
    }

    /// The first listener.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.env.addr("listener_port")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    pub fn admin(&self) -> u16 {
        self.proxy.admin()
    }
}
