//! Pure: the syntax of the names a spec gives, as Kubernetes, Istio, the Gateway API and HTTP
//! accept them: what the schema's patterns cannot say (a name that becomes part of another
//! object's name, a host that may be a wildcard).

pub fn is_dns1035_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

pub fn is_dns1123_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.len() <= 63
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

pub fn is_env_var_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && !bytes[0].is_ascii_digit()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

pub fn is_host(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    let rest = s.strip_prefix("*.").unwrap_or(s);
    !rest.is_empty()
        && rest.len() <= 253
        && rest.split('.').all(|label| {
            let label = label.to_ascii_lowercase();
            is_dns1123_label(&label)
        })
}

pub fn is_gateway_reference(s: &str) -> bool {
    match s.split_once('/') {
        Some((namespace, name)) => is_dns1123_label(namespace) && is_subdomain(name),
        None => is_subdomain(s),
    }
}

pub fn is_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

pub fn is_label_value(s: &str) -> bool {
    let bytes = s.as_bytes();
    s.is_empty()
        || (s.len() <= 63
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')))
}

pub fn is_cookie_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A Gateway API hostname: a lowercase DNS name, optionally with one leading `*.` label; no IP.
pub fn is_route_hostname(s: &str) -> bool {
    let rest = s.strip_prefix("*.").unwrap_or(s);
    !rest.is_empty()
        && s.len() <= 253
        && rest.split('.').all(is_dns1123_label)
        && rest.parse::<std::net::Ipv4Addr>().is_err()
}
