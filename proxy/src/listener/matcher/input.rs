//! The network inputs a filter chain matcher reads (`envoy.matching.inputs.*`), and their values
//! as Envoy renders them.

use std::net::IpAddr;

use super::MatchInput;

/// One of Envoy's network match inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    DestinationIp,
    DestinationPort,
    SourceIp,
    SourcePort,
    DirectSourceIp,
    SourceType,
    ServerName,
    TransportProtocol,
    ApplicationProtocol,
}

impl Input {
    /// The input for a `typed_config` message name.
    pub fn from_type_name(name: &str) -> Option<Self> {
        let short = name.strip_prefix("envoy.extensions.matching.common_inputs.network.v3.")?;
        Some(match short {
            "DestinationIPInput" => Input::DestinationIp,
            "DestinationPortInput" => Input::DestinationPort,
            "SourceIPInput" => Input::SourceIp,
            "SourcePortInput" => Input::SourcePort,
            "DirectSourceIPInput" => Input::DirectSourceIp,
            "SourceTypeInput" => Input::SourceType,
            "ServerNameInput" => Input::ServerName,
            "TransportProtocolInput" => Input::TransportProtocol,
            "ApplicationProtocolInput" => Input::ApplicationProtocol,
            _ => return None,
        })
    }

    /// Whether only a listener filter can supply the value.
    pub fn needs_inspection(self) -> bool {
        matches!(
            self,
            Input::ServerName | Input::TransportProtocol | Input::ApplicationProtocol
        )
    }

    /// The input's value for a connection; `None` when it has none (no SNI, no ALPN, not local).
    pub fn value(self, c: &MatchInput<'_>) -> Option<String> {
        match self {
            Input::DestinationIp => Some(c.destination.ip().to_string()),
            Input::DestinationPort => Some(c.destination.port().to_string()),
            Input::SourceIp => Some(c.source.ip().to_string()),
            Input::SourcePort => Some(c.source.port().to_string()),
            Input::DirectSourceIp => Some(c.direct_source.ip().to_string()),
            // "local" for a connection from this host; no value otherwise.
            Input::SourceType => {
                is_local(c.source.ip(), c.destination.ip()).then(|| "local".into())
            }
            Input::ServerName => c.server_name.filter(|s| !s.is_empty()).map(str::to_string),
            Input::TransportProtocol => {
                Some(c.transport_protocol.to_string()).filter(|s| !s.is_empty())
            }
            // Each protocol in single quotes, joined by commas: `'h2','http/1.1'`.
            Input::ApplicationProtocol => (!c.application_protocols.is_empty()).then(|| {
                c.application_protocols
                    .iter()
                    .map(|p| format!("'{p}'"))
                    .collect::<Vec<_>>()
                    .join(",")
            }),
        }
    }
}

fn is_local(source: IpAddr, destination: IpAddr) -> bool {
    source.is_loopback() || source == destination
}
