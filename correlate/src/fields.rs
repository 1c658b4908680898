//! Name tables: Sigma/taxonomy field names to Vigil's ECS names, and Sigma `logsource` to event
//! filters. Both are plain const tables so adding a mapping is one line.

/// Sigma / SigmaHQ taxonomy field names and their Vigil (ECS) equivalents. Lookup is
/// ASCII case-insensitive; a name not listed here is used as written (so ECS names such as
/// `source.ip` and `extra` keys work directly).
pub const FIELD_MAP: &[(&str, &str)] = &[
    ("SourceIp", "source.ip"),
    ("src_ip", "source.ip"),
    ("SourceAddress", "source.ip"),
    ("ClientIP", "source.ip"),
    ("c-ip", "source.ip"),
    ("SourcePort", "source.port"),
    ("src_port", "source.port"),
    ("DestinationIp", "destination.ip"),
    ("dst_ip", "destination.ip"),
    ("DestAddress", "destination.ip"),
    ("DestinationPort", "destination.port"),
    ("dst_port", "destination.port"),
    ("DestPort", "destination.port"),
    ("User", "user.name"),
    ("TargetUserName", "user.name"),
    ("UserName", "user.name"),
    ("username", "user.name"),
    ("Image", "process.name"),
    ("ProcessName", "process.name"),
    ("ProcessId", "process.pid"),
    ("pid", "process.pid"),
    ("Computer", "host.name"),
    ("ComputerName", "host.name"),
    ("Hostname", "host.name"),
    ("cs-method", "http.request.method"),
    ("cs-uri-stem", "url.path"),
    ("c-uri", "url.path"),
    ("sc-status", "http.response.status_code"),
    ("Protocol", "network.transport"),
];

/// Resolves a field name as written in a rule to the name Vigil events use.
pub fn resolve_field(name: &str) -> String {
    FIELD_MAP
        .iter()
        .find(|(sigma, _)| sigma.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_owned(), |(_, ecs)| (*ecs).to_owned())
}

/// One row of [`LOGSOURCE_MAP`]: a `logsource` pattern and the events it selects.
#[derive(Debug, Clone, Copy)]
pub struct LogsourceMapping {
    /// `logsource.product` this row needs (`None`: any).
    pub product: Option<&'static str>,
    /// `logsource.service` this row needs (`None`: any).
    pub service: Option<&'static str>,
    /// `logsource.category` this row needs (`None`: any).
    pub category: Option<&'static str>,
    /// The event must have at least one of these `(field, value)` pairs (ASCII case-insensitive
    /// equality).
    pub any_of: &'static [(&'static str, &'static str)],
    /// When true, the parts this row leaves `None` must be absent from the rule too (a row for
    /// exactly `{product: linux}` must not claim `{product: linux, category: process_creation}`).
    pub exact: bool,
}

const SSHD: &[(&str, &str)] = &[("process.name", "sshd"), ("event.dataset", "openssh")];

/// How `logsource` maps onto events. The first row whose given parts all equal the rule's
/// (ASCII case-insensitive) wins. A rule whose `logsource` no row matches is refused as
/// unsupported (no Vigil parser produces such events); a rule without `logsource` applies to
/// every event (its detection alone decides). Add a row when a parser starts producing a source.
pub const LOGSOURCE_MAP: &[LogsourceMapping] = &[
    LogsourceMapping {
        product: Some("linux"),
        service: Some("sshd"),
        category: None,
        any_of: SSHD,
        exact: false,
    },
    LogsourceMapping {
        product: Some("linux"),
        service: Some("auth"),
        category: None,
        any_of: &[
            ("process.name", "sshd"),
            ("process.name", "sudo"),
            ("process.name", "su"),
            ("process.name", "login"),
            ("event.dataset", "openssh"),
            ("event.dataset", "sudo"),
            ("event.category", "authentication"),
        ],
        exact: false,
    },
    LogsourceMapping {
        product: Some("linux"),
        service: Some("sudo"),
        category: None,
        any_of: &[("process.name", "sudo"), ("event.dataset", "sudo")],
        exact: false,
    },
    LogsourceMapping {
        product: Some("linux"),
        service: Some("syslog"),
        category: None,
        any_of: &[("observer.type", "syslog"), ("observer.type", "file")],
        exact: false,
    },
    LogsourceMapping {
        product: Some("linux"),
        service: Some("cron"),
        category: None,
        any_of: &[("process.name", "cron"), ("process.name", "CRON")],
        exact: false,
    },
    LogsourceMapping {
        product: Some("linux"),
        service: None,
        category: None,
        any_of: &[("observer.type", "syslog"), ("observer.type", "file")],
        exact: true,
    },
    LogsourceMapping {
        product: None,
        service: Some("sshd"),
        category: None,
        any_of: SSHD,
        exact: false,
    },
    LogsourceMapping {
        product: None,
        service: None,
        category: Some("authentication"),
        any_of: &[("event.category", "authentication")],
        exact: true,
    },
    LogsourceMapping {
        product: Some("zeek"),
        service: Some("conn"),
        category: None,
        any_of: &[("event.dataset", "zeek.conn")],
        exact: false,
    },
    LogsourceMapping {
        product: Some("zeek"),
        service: Some("dns"),
        category: None,
        any_of: &[("event.dataset", "zeek.dns")],
        exact: false,
    },
    LogsourceMapping {
        product: Some("zeek"),
        service: Some("http"),
        category: None,
        any_of: &[("event.dataset", "zeek.http")],
        exact: false,
    },
    LogsourceMapping {
        product: Some("zeek"),
        service: Some("ssh"),
        category: None,
        any_of: &[("event.dataset", "zeek.ssh")],
        exact: false,
    },
    LogsourceMapping {
        product: Some("zeek"),
        service: Some("notice"),
        category: None,
        any_of: &[("event.dataset", "zeek.notice")],
        exact: false,
    },
    LogsourceMapping {
        product: None,
        service: None,
        category: Some("dns"),
        any_of: &[("event.dataset", "zeek.dns")],
        exact: true,
    },
    LogsourceMapping {
        product: None,
        service: None,
        category: Some("firewall"),
        any_of: &[("event.category", "network")],
        exact: true,
    },
    LogsourceMapping {
        product: None,
        service: None,
        category: Some("network_connection"),
        any_of: &[("event.category", "network")],
        exact: true,
    },
    LogsourceMapping {
        product: None,
        service: None,
        category: Some("webserver"),
        any_of: &[("event.category", "web")],
        exact: true,
    },
    LogsourceMapping {
        product: None,
        service: None,
        category: Some("proxy"),
        any_of: &[("event.category", "web")],
        exact: true,
    },
];

/// The `(field, value)` alternatives a rule's `logsource` maps to, or `None` when no row of
/// [`LOGSOURCE_MAP`] matches (the loader then refuses the rule as unsupported, unless told to
/// apply it to every event).
pub fn logsource_filter(
    product: Option<&str>,
    service: Option<&str>,
    category: Option<&str>,
) -> Option<&'static [(&'static str, &'static str)]> {
    fn fits(want: Option<&str>, have: Option<&str>) -> bool {
        match (want, have) {
            (None, _) => true,
            (Some(w), Some(h)) => w.eq_ignore_ascii_case(h.trim()),
            (Some(_), None) => false,
        }
    }
    LOGSOURCE_MAP
        .iter()
        .find(|m| {
            (m.product.is_some() || m.service.is_some() || m.category.is_some())
                && fits(m.product, product)
                && fits(m.service, service)
                && fits(m.category, category)
                && (!m.exact
                    || ((m.product.is_some() || product.is_none())
                        && (m.service.is_some() || service.is_none())
                        && (m.category.is_some() || category.is_none())))
        })
        .map(|m| m.any_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigma_names_resolve_to_ecs_and_others_pass_through() {
        assert_eq!(resolve_field("SourceIp"), "source.ip");
        assert_eq!(resolve_field("sourceip"), "source.ip");
        assert_eq!(resolve_field("TargetUserName"), "user.name");
        assert_eq!(resolve_field("source.ip"), "source.ip");
        assert_eq!(resolve_field("sshd.method"), "sshd.method");
    }

    #[test]
    fn logsources_map_to_filters_and_unknown_ones_to_none() {
        assert_eq!(
            logsource_filter(Some("linux"), Some("sshd"), None),
            Some(SSHD)
        );
        assert!(logsource_filter(None, None, Some("Authentication")).is_some());
        assert_eq!(
            logsource_filter(Some("windows"), None, Some("process_creation")),
            None
        );
        assert_eq!(logsource_filter(None, None, None), None);
        // The row for exactly {product: linux} does not claim other Linux sources.
        assert!(logsource_filter(Some("linux"), None, None).is_some());
        assert_eq!(
            logsource_filter(Some("linux"), None, Some("process_creation")),
            None
        );
    }
}
