//! Pure: does a config setting look like a credential? By its name, and by its value.
//!
//! ConfigMaps are readable by far more subjects than Secrets (every `view` binding in the
//! namespace), so a key that reaches one is as good as published. The lab put its API key there.
//! Names catch the honest case (`AZURE_API_KEY`); values catch the careless one, where a harmless
//! name (`AUTH_HEADER`) carries `Bearer sk-...`. Both are heuristics: `spec.notSecret` lets a user
//! say that a flagged setting is not a secret.
//!
//! Messages name the kind of credential and never the value: they end up in status and Events.

/// Words of a variable name that mark it as a credential. Trailing digits are ignored
/// (`OPENAI_APIKEY2`).
const SECRET_WORDS: &[&str] = &[
    "KEY",
    "SECRET",
    "PASSWORD",
    "TOKEN",
    "CREDENTIAL",
    "CREDENTIALS",
    "PASSWD",
    "PWD",
];

/// Endings of a name word written without separators (`OPENAIAPIKEY`, `AWSSECRETACCESSKEY`).
const SECRET_SUFFIXES: &[&str] = &[
    "APIKEY",
    "ACCESSKEY",
    "SECRETKEY",
    "PRIVATEKEY",
    "AUTHTOKEN",
];

/// Why a name looks like a credential, if it does.
pub fn name_looks_secret(key: &str) -> bool {
    let upper = key.to_ascii_uppercase();
    upper.split(['_', '-', '.']).any(|word| {
        let word = word.trim_end_matches(|c: char| c.is_ascii_digit());
        SECRET_WORDS.contains(&word) || SECRET_SUFFIXES.iter().any(|s| word.ends_with(s))
    })
}

/// Prefixes of API keys and tokens that providers issue, with at least this many characters after
/// the prefix. Publishable keys (Stripe's `pk_`) are not secrets and are not listed.
const KEY_PREFIXES: &[(&str, usize, &str)] = &[
    ("sk-", 8, "an API key (sk-...)"),
    ("sk_live_", 8, "a Stripe secret key"),
    ("sk_test_", 8, "a Stripe secret key"),
    ("rk_live_", 8, "a Stripe restricted key"),
    ("ghp_", 20, "a GitHub token"),
    ("gho_", 20, "a GitHub token"),
    ("ghu_", 20, "a GitHub token"),
    ("ghs_", 20, "a GitHub token"),
    ("ghr_", 20, "a GitHub token"),
    ("github_pat_", 20, "a GitHub token"),
    ("glpat-", 16, "a GitLab token"),
    ("xoxb-", 8, "a Slack token"),
    ("xoxp-", 8, "a Slack token"),
    ("xapp-", 8, "a Slack token"),
    ("hf_", 20, "a Hugging Face token"),
    ("AKIA", 16, "an AWS access key id"),
    ("ASIA", 16, "an AWS access key id"),
    ("AIza", 30, "a Google API key"),
    ("npm_", 30, "an npm token"),
    ("pypi-", 30, "a PyPI token"),
];

/// Schemes of an HTTP `Authorization` header whose parameter is the credential itself.
const AUTH_SCHEMES: &[&str] = &["bearer", "basic", "token", "apikey", "api-key", "digest"];

/// Parameter names that carry a credential in a connection string (`AccountKey=...;`) or a URL's
/// query (`?sig=...`), compared in lower case.
const SECRET_PARAMETERS: &[&str] = &[
    "accountkey",
    "sharedaccesskey",
    "password",
    "pwd",
    "sig",
    "api-key",
    "apikey",
    "api_key",
    "access_token",
    "client_secret",
    "secret",
    "token",
];

/// Why a value looks like a credential, if it does: a phrase for "the value looks like ...".
pub fn value_looks_secret(value: &str) -> Option<&'static str> {
    let value = value.trim();
    if value.contains("-----BEGIN ") {
        return Some("a PEM block (-----BEGIN ...)");
    }
    if let Some((scheme, rest)) = value.split_once(char::is_whitespace)
        && AUTH_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str())
        && !rest.trim().is_empty()
        && !rest.trim().contains(char::is_whitespace)
    {
        return Some("an Authorization header value (scheme and credential)");
    }
    if is_jwt(value) {
        return Some("a JSON Web Token");
    }
    if !value.contains(char::is_whitespace) {
        for (prefix, min_rest, what) in KEY_PREFIXES {
            if let Some(rest) = value.strip_prefix(prefix)
                && rest.len() >= *min_rest
                && rest.bytes().all(is_token_byte)
            {
                return Some(what);
            }
        }
    }
    if url_has_password(value) {
        return Some("a URL with a password in it (user:password@host)");
    }
    if has_secret_parameter(value) {
        return Some(
            "a connection string or URL with a credential parameter (AccountKey=, sig=, password=, ...)",
        );
    }
    if is_random_key(value) {
        return Some("a random key (a long run of letters and digits)");
    }
    None
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')
}

fn is_base64url(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Three base64url parts; the header is JSON, so it starts with `{"`, base64 `eyJ`.
fn is_jwt(value: &str) -> bool {
    let parts: Vec<&str> = value.split('.').collect();
    parts.len() == 3
        && parts[0].starts_with("eyJ")
        && parts[0].len() >= 10
        && parts[1].len() >= 4
        && parts[..2].iter().all(|p| is_base64url(p))
        && (parts[2].is_empty() || is_base64url(parts[2]))
}

fn url_has_password(value: &str) -> bool {
    let Some((_, rest)) = value.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => userinfo
            .split_once(':')
            .is_some_and(|(_, password)| !password.is_empty()),
        None => false,
    }
}

fn has_secret_parameter(value: &str) -> bool {
    if value.contains(char::is_whitespace) {
        return false;
    }
    let query = value.split_once('?').map_or(value, |(_, q)| q);
    query.split([';', '&']).any(|pair| {
        pair.split_once('=').is_some_and(|(name, v)| {
            SECRET_PARAMETERS.contains(&name.trim().to_ascii_lowercase().as_str())
                && !v.trim().is_empty()
        })
    })
}

/// A long run of letters and digits that reads like random bytes: Azure OpenAI's keys (32 hex
/// digits, or 84 letters and digits), most providers' keys without a prefix. Words joined by `-`,
/// `_` or `.` (model and deployment names) never form a run that long; UUIDs (ids, not keys) and
/// 40 or 64 hex digits (commit and image digests) are left alone.
fn is_random_key(value: &str) -> bool {
    const MIN_RUN: usize = 24;
    if value.contains(char::is_whitespace) || value.contains("://") || is_uuid(value) {
        return false;
    }
    value
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '='))
        .any(|run| {
            let letters = run.bytes().filter(u8::is_ascii_alphabetic).count();
            let digits = run.bytes().filter(u8::is_ascii_digit).count();
            run.len() >= MIN_RUN
                && letters >= 4
                && digits >= 4
                && !is_digest(run)
                && entropy(run) >= 3.5
        })
}

/// 40 or 64 hex digits: a commit or an image digest (`@sha256:...`), which identify, not grant.
fn is_digest(run: &str) -> bool {
    matches!(run.len(), 40 | 64) && run.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_uuid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Shannon entropy in bits per character.
fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for key in [
            "MAX_TOKENS",
            "KEYCLOAK_URL",
            "AZURE_API_URL",
            "TOKENIZER",
            "MONKEY_MODE",
        ] {
            assert!(!name_looks_secret(key), "{key} is harmless");
        }
        for key in [
            "AZURE_API_KEY",
            "OPENAI_APIKEY",
            "OPENAI_APIKEY2",
            "API_KEY_2",
            "client-secret",
            "api.token",
            "PASSWORD",
            "DB_PWD",
            "AWSSECRETACCESSKEY",
            "GOOGLE_APPLICATION_CREDENTIALS",
        ] {
            assert!(name_looks_secret(key), "{key} names a credential");
        }
    }

    /// Each case: what it is, the value, and a fragment of the reason.
    #[test]
    fn credential_values_are_refused() {
        let cases: [(&str, &str, &str); 16] = [
            ("bearer header", "Bearer sk-proj-abc123", "Authorization"),
            (
                "basic header",
                "Basic dXNlcjpwYXNzd29yZA==",
                "Authorization",
            ),
            ("OpenAI project key", "sk-proj-Ab3dE5fG7hI9jK1l", "sk-"),
            ("Anthropic key", "sk-ant-api03-abcdEFGH1234ijkl", "sk-"),
            (
                "GitHub token",
                "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
                "GitHub",
            ),
            ("AWS access key id", "AKIAIOSFODNN7EXAMPLE", "AWS"),
            (
                "JWT",
                "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                "JSON Web Token",
            ),
            (
                "PEM private key",
                "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
                "PEM",
            ),
            (
                "password in a URL",
                "postgres://app:hunter2@db.example.com:5432/app",
                "password",
            ),
            (
                "storage connection string",
                "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=bm90LWEta2V5;EndpointSuffix=core.windows.net",
                "credential parameter",
            ),
            (
                "SAS URL",
                "https://acct.blob.core.windows.net/c?sv=2022-11-02&sig=abcd%3D",
                "credential parameter",
            ),
            (
                "Azure OpenAI key, 32 hex digits",
                "8f3a9c2e7b1d4f6a0e5c9b8d7a6f3e21",
                "random key",
            ),
            (
                "Azure OpenAI key, 84 characters",
                "5Wq8Zt2Lm9Xv3Kp7Rb1Nc6Hd4Gf0Js8Ty2Ue5Io9Pa3Sd7Fg1Hj6Kl4Zx0Cv8Bn2Mq5Wr9Et3Yu7Ii1Oo6PpJQQJ99",
                "random key",
            ),
            ("Slack bot token", "xoxb-1234567890-abcdefGHIJ", "Slack"),
            (
                "Google API key",
                "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI",
                "Google",
            ),
            (
                "Hugging Face token",
                "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345",
                "Hugging Face",
            ),
        ];
        for (what, value, fragment) in cases {
            match value_looks_secret(value) {
                Some(reason) => assert!(
                    reason.contains(fragment),
                    "{what}: reason {reason:?} lacks {fragment:?}"
                ),
                None => panic!("{what}: {value:?} was taken for an ordinary value"),
            }
        }
    }

    #[test]
    fn ordinary_values_pass() {
        for (what, value) in [
            ("endpoint URL", "https://example.openai.azure.com/"),
            ("model name", "gpt-4o-2024-08-06"),
            ("deployment name", "chat-gpt4o-mini-eastus2-production-2024"),
            ("number", "0.7"),
            ("integer", "4096"),
            (
                "JSON",
                r#"{"temperature": 0.2, "max_tokens": 512, "stream": true}"#,
            ),
            ("API version", "2024-10-21"),
            ("tenant id (UUID)", "c2b1e8f4-5a6d-4e3f-9b7a-1d2c3e4f5a6b"),
            ("commit", "3f786850e387550fdab836ed7e6dc881de23001b"),
            (
                "image by digest",
                "registry.example.com/app@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            ),
            ("path", "/var/run/app/config.yaml"),
            (
                "sentence",
                "You are a helpful assistant. Answer in English.",
            ),
            ("word Bearer alone", "Bearer"),
            ("short sk value", "sk-2"),
            (
                "URL with a user but no password",
                "https://user@example.com/",
            ),
            (
                "query without secrets",
                "https://example.com/?page=2&sort=asc",
            ),
            (
                "camel-case identifier",
                "MyApplicationInsightsConnectionName",
            ),
        ] {
            assert_eq!(value_looks_secret(value), None, "{what}: {value:?}");
        }
    }
}
