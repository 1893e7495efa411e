//! From a `providers` row to a provider: the HTTP client every provider of
//! a replica shares, API keys and base URLs.

use std::{env::VarError, sync::Arc, time::Duration};

use chatd_shared::{db::providers::Provider as ProviderRow, status::ProviderKind};
use reqwest::{Url, header::HeaderValue};

use super::{AnthropicProvider, MockProvider, OpenAiProvider, SharedProvider};

/// How long establishing a connection (TCP and TLS) may take. Streams have
/// no overall timeout: a long answer is not a failure; the turn loop's
/// first-chunk and idle timeouts ([`super::start_call`]) catch stalls.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP client a replica shares between all its providers (one
/// connection pool). It never retries (reqwest would re-send a request
/// after some protocol-level refusals, and a duplicated model call doubles
/// cost) and never follows redirects (a redirected POST loses its body; a
/// redirect means the base URL is wrong, and the error says so).
///
/// Fails only when the TLS backend cannot be set up, which is a startup
/// error.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .retry(reqwest::retry::never())
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("chatd/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Why a `providers` row cannot be turned into a provider. Messages name
/// the provider and never contain an API key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderConfigError {
    /// `api_key_env` names a variable that does not hold a key.
    #[error("provider {provider}: the environment variable {variable} (its api_key_env) {reason}")]
    ApiKeyVariable {
        /// The provider's name.
        provider: String,
        /// The variable's name.
        variable: String,
        /// What is wrong with it ("is not set", …).
        reason: &'static str,
    },
    /// The API key cannot be sent in an HTTP header.
    #[error("provider {provider}: the API key contains characters not allowed in an HTTP header")]
    ApiKeyNotAHeader {
        /// The provider's name.
        provider: String,
    },
    /// The base URL is not an absolute http(s) URL.
    #[error("provider {provider}: invalid base URL {url:?}: {reason}")]
    BaseUrl {
        /// The provider's name.
        provider: String,
        /// The base URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `mock` provider's settings cannot be read (see [`MockProvider`]).
    #[error("provider {provider}: invalid mock settings {url:?}: {reason}")]
    MockSettings {
        /// The provider's name.
        provider: String,
        /// The base URL holding the settings.
        url: String,
        /// What is wrong with them.
        reason: String,
    },
}

/// The provider a `providers` row describes, picked by its kind. The API
/// key is `api_key` when set, else read now from the environment variable
/// `api_key_env` names (a missing variable is an error); without either,
/// requests carry no key (local servers such as Ollama need none).
/// Whether the row is enabled is the caller's business.
pub fn build(
    row: &ProviderRow,
    http: &reqwest::Client,
) -> Result<SharedProvider, ProviderConfigError> {
    let provider: SharedProvider = match row.kind {
        ProviderKind::Openai => Arc::new(OpenAiProvider::new(
            &row.name,
            &row.base_url,
            api_key(row)?.as_deref(),
            http.clone(),
        )?),
        ProviderKind::Anthropic => Arc::new(AnthropicProvider::new(
            &row.name,
            &row.base_url,
            api_key(row)?.as_deref(),
            http.clone(),
        )?),
        ProviderKind::Mock => Arc::new(MockProvider::from_url(&row.name, &row.base_url)?),
    };
    Ok(provider)
}

/// The row's API key. Surrounding whitespace is dropped: keys pasted into
/// secrets often end with a newline, which no header may contain.
fn api_key(row: &ProviderRow) -> Result<Option<String>, ProviderConfigError> {
    if let Some(key) = row
        .api_key
        .as_deref()
        .map(str::trim)
        .filter(|key| !key.is_empty())
    {
        return Ok(Some(key.to_owned()));
    }
    let Some(variable) = row.api_key_env.as_deref().filter(|name| !name.is_empty()) else {
        return Ok(None);
    };
    let missing = |reason| ProviderConfigError::ApiKeyVariable {
        provider: row.name.clone(),
        variable: variable.to_owned(),
        reason,
    };
    match std::env::var(variable) {
        Ok(key) if key.trim().is_empty() => Err(missing("is empty")),
        Ok(key) => Ok(Some(key.trim().to_owned())),
        Err(VarError::NotPresent) => Err(missing("is not set")),
        Err(VarError::NotUnicode(_)) => Err(missing("is not valid Unicode")),
    }
}

/// `base_url` with `path` appended as path segments (a trailing slash on
/// the base does not double; a query string is kept).
pub(crate) fn endpoint(
    provider: &str,
    base_url: &str,
    path: &[&str],
) -> Result<Url, ProviderConfigError> {
    let invalid = |reason: String| ProviderConfigError::BaseUrl {
        provider: provider.to_owned(),
        url: base_url.to_owned(),
        reason,
    };
    let mut url = Url::parse(base_url.trim()).map_err(|error| invalid(error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "the scheme must be http or https, not {}",
            url.scheme()
        )));
    }
    url.path_segments_mut()
        .map_err(|()| invalid("it cannot have a path".to_owned()))?
        .pop_if_empty()
        .extend(path);
    Ok(url)
}

/// A header value holding a secret: checked once here, and marked
/// sensitive so that it never shows in `Debug` output.
pub(crate) fn secret_header(
    provider: &str,
    value: String,
) -> Result<HeaderValue, ProviderConfigError> {
    let mut header =
        HeaderValue::try_from(value).map_err(|_| ProviderConfigError::ApiKeyNotAHeader {
            provider: provider.to_owned(),
        })?;
    header.set_sensitive(true);
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatd_shared::ids::ProviderId;
    use chrono::Utc;

    fn row(kind: ProviderKind, base_url: &str) -> ProviderRow {
        ProviderRow {
            id: ProviderId::new_random(),
            name: "test".into(),
            kind,
            base_url: base_url.into(),
            api_key: None,
            api_key_env: None,
            enabled: true,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn endpoints_append_to_the_base_path() {
        let cases = [
            (
                "https://api.openai.com/v1",
                "https://api.openai.com/v1/chat/completions",
            ),
            (
                "https://api.openai.com/v1/",
                "https://api.openai.com/v1/chat/completions",
            ),
            (
                "http://localhost:11434/v1",
                "http://localhost:11434/v1/chat/completions",
            ),
            (
                "https://example.com/openai/v1?api-version=1",
                "https://example.com/openai/v1/chat/completions?api-version=1",
            ),
        ];
        for (base, expected) in cases {
            let url = endpoint("p", base, &["chat", "completions"]).expect("valid base URL");
            assert_eq!(url.as_str(), expected);
        }
        let anthropic = endpoint("p", "https://api.anthropic.com", &["v1", "messages"]);
        assert_eq!(
            anthropic.expect("valid base URL").as_str(),
            "https://api.anthropic.com/v1/messages"
        );
    }

    #[test]
    fn bad_base_urls_are_config_errors() {
        for base in [
            "",
            "api.openai.com/v1",
            "ftp://example.com",
            "mailto:x@example.com",
        ] {
            let error = endpoint("p", base, &["x"]).expect_err(base);
            assert!(
                matches!(error, ProviderConfigError::BaseUrl { .. }),
                "{error}"
            );
        }
    }

    #[test]
    fn missing_key_variable_is_named_and_key_is_never_shown() {
        let mut openai = row(ProviderKind::Openai, "https://api.openai.com/v1");
        openai.api_key_env = Some("CHATD_TEST_SURELY_UNSET_KEY_VARIABLE".into());
        let http = http_client().expect("client");
        let error = build(&openai, &http).err().expect("missing variable fails");
        assert_eq!(
            error.to_string(),
            "provider test: the environment variable CHATD_TEST_SURELY_UNSET_KEY_VARIABLE (its api_key_env) is not set"
        );

        openai.api_key = Some("sk-secret\u{7f}".into());
        let error = build(&openai, &http).err().expect("bad key fails");
        assert!(!error.to_string().contains("sk-secret"), "{error}");

        openai.api_key = Some(" sk-secret\n".into());
        assert!(
            build(&openai, &http).is_ok(),
            "the stored key, trimmed, wins over the variable"
        );
    }

    #[test]
    fn kind_picks_the_implementation() {
        let http = http_client().expect("client");
        for (kind, base) in [
            (ProviderKind::Openai, "https://api.openai.com/v1"),
            (ProviderKind::Anthropic, "https://api.anthropic.com"),
            (ProviderKind::Mock, "mock://?tokens=3"),
        ] {
            let provider = build(&row(kind, base), &http).expect("valid row");
            assert_eq!(provider.name(), "test");
        }
        let bad_mock = build(&row(ProviderKind::Mock, "mock://?tokens=many"), &http);
        assert!(matches!(
            bad_mock,
            Err(ProviderConfigError::MockSettings { .. })
        ));
    }

    #[test]
    fn secret_headers_do_not_debug_print() {
        let header = secret_header("p", "Bearer sk-secret".into()).expect("valid header");
        assert!(!format!("{header:?}").contains("sk-secret"));
    }
}
