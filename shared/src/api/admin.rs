//! Users, tokens, providers and model configs: the admin API and `/models`.

use chrono::{DateTime, Utc};
use serde::{
    Deserialize, Deserializer, Serialize,
    de::{Error as _, Unexpected},
};
use serde_json::{Number, Value};
use utoipa::openapi::{Object, ObjectBuilder, Type, schema::SchemaType};

use super::schema::{self, or_null};
use crate::{
    db,
    ids::{ModelConfigId, ProviderId, TokenId, UserId},
    status::{ProviderKind, UserRole},
};

/// Longest username (the column's check).
pub const MAX_USERNAME: usize = 64;
/// Longest token label.
pub const MAX_TOKEN_NAME: usize = 128;
/// Longest provider name (the column's check).
pub const MAX_PROVIDER_NAME: usize = 128;
/// Longest model or display name.
pub const MAX_MODEL_NAME: usize = 200;

/// For PATCH bodies: distinguishes a field left out (`None`) from one set to
/// `null` (`Some(None)`).
fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// An integer field, which may come as a number with a zero fraction
/// (`4096.0`): JSON has one number type, and JSON Schema counts such a
/// number as an integer.
pub(crate) fn whole<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    let number = Number::deserialize(deserializer)?;
    let value = number.as_i64().or_else(|| {
        number
            .as_f64()
            .filter(|value| value.fract() == 0.0 && value.abs() < i64::MAX as f64)
            .map(|value| value as i64)
    });
    value
        .and_then(|value| T::try_from(value).ok())
        .ok_or_else(|| {
            D::Error::invalid_value(
                Unexpected::Other(&format!("the number {number}")),
                &format!("a whole number that fits {}", std::any::type_name::<T>()).as_str(),
            )
        })
}

/// An optional integer field (see [`whole`]); `null` reads as left out.
pub(crate) fn optional_whole<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    #[derive(Deserialize)]
    struct Whole<T: TryFrom<i64>>(#[serde(deserialize_with = "whole")] T);
    Ok(Option::<Whole<T>>::deserialize(deserializer)?.map(|Whole(value)| value))
}

/// A PATCH integer field (see [`whole`] and [`nullable`]).
fn nullable_whole<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    optional_whole(deserializer).map(Some)
}

/// A user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    /// Its id.
    pub id: UserId,
    /// Its unique name.
    pub username: String,
    /// Member or admin.
    pub role: UserRole,
    /// Created.
    pub created_at: DateTime<Utc>,
}

impl From<&db::users::User> for User {
    fn from(row: &db::users::User) -> Self {
        Self {
            id: row.id,
            username: row.username.clone(),
            role: row.role,
            created_at: row.created_at,
        }
    }
}

/// `POST /admin/users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Unique name (1–64 characters).
    #[schema(schema_with = username_schema)]
    pub username: String,
    /// Role (default `member`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<UserRole>,
}

fn username_schema() -> ObjectBuilder {
    schema::trimmed_name(false, Some(MAX_USERNAME)).description(Some(format!(
        "Unique name: 1–{MAX_USERNAME} characters, no control characters (white space \
         around it is trimmed)."
    )))
}

/// `POST /admin/users/{id}/tokens`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// A label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = token_name_schema)]
    pub name: Option<String>,
    /// When it stops working (in the future; default: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

fn token_name_schema() -> Object {
    or_null(
        schema::trimmed_name(true, Some(MAX_TOKEN_NAME)).description(Some(format!(
            "A label: at most {MAX_TOKEN_NAME} characters, no control characters (white \
             space around it is trimmed)."
        ))),
    )
}

/// A token's row (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Token {
    /// Its id.
    pub id: TokenId,
    /// Whose it is.
    pub user_id: UserId,
    /// Its label.
    pub name: String,
    /// Its first characters, to recognise it.
    pub prefix: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Roughly when it was last used (updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&db::tokens::ApiToken> for Token {
    fn from(row: &db::tokens::ApiToken) -> Self {
        Self {
            id: row.id,
            user_id: row.user_id,
            name: row.name.clone(),
            prefix: row.prefix.clone(),
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
        }
    }
}

/// A new token: the secret is in this answer and nowhere else, ever.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenCreated {
    /// The secret (`chatd_…`): send it as `Authorization: Bearer …`.
    pub token: String,
    /// The stored row.
    #[serde(flatten)]
    pub details: Token,
}

/// A provider (the key itself is never shown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Provider {
    /// Its id.
    pub id: ProviderId,
    /// Unique name.
    pub name: String,
    /// Wire format.
    pub kind: ProviderKind,
    /// Base URL (vendor SDK convention).
    pub base_url: String,
    /// True when a key is stored in the database.
    pub has_api_key: bool,
    /// The environment variable holding the key, if that is how it is given.
    pub api_key_env: Option<String>,
    /// Disabled providers serve no model.
    pub enabled: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<&db::providers::Provider> for Provider {
    fn from(row: &db::providers::Provider) -> Self {
        Self {
            id: row.id,
            name: row.name.clone(),
            kind: row.kind,
            base_url: row.base_url.clone(),
            has_api_key: row.api_key.is_some(),
            api_key_env: row.api_key_env.clone(),
            enabled: row.enabled,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// `POST /admin/providers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProvider {
    /// Unique name.
    #[schema(schema_with = provider_name_schema)]
    pub name: String,
    /// Wire format.
    pub kind: ProviderKind,
    /// Base URL: with the version for `openai` (`https://api.openai.com/v1`),
    /// without for `anthropic` (`https://api.anthropic.com`); for `mock`,
    /// `mock://` with settings (`mock://?tokens=8`).
    #[schema(schema_with = base_url_schema)]
    pub base_url: String,
    /// The key, stored in the database (prefer `api_key_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = api_key_schema)]
    pub api_key: Option<String>,
    /// The environment variable (on every replica) that holds the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = api_key_env_schema)]
    pub api_key_env: Option<String>,
    /// Enabled (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

fn provider_name_schema() -> ObjectBuilder {
    schema::trimmed_name(false, Some(MAX_PROVIDER_NAME)).description(Some(format!(
        "Unique name: 1–{MAX_PROVIDER_NAME} characters, no control characters (white space \
         around it is trimmed)."
    )))
}

fn base_url_schema() -> ObjectBuilder {
    schema::text(None).description(Some(
        "Base URL: an http(s) URL for `openai` (with the version, \
         `https://api.openai.com/v1`) and `anthropic` (without, \
         `https://api.anthropic.com`); for `mock`, `mock://` with settings \
         (`mock://?tokens=8`).",
    ))
}

fn api_key_schema() -> Object {
    or_null(schema::trimmed_name(false, None).description(Some(
        "The key, stored in the database (prefer `api_key_env`): not empty, no control \
         characters. Not together with `api_key_env`.",
    )))
}

fn api_key_env_schema() -> Object {
    or_null(schema::variable_name().description(Some(
        "The environment variable (on every replica) that holds the key: letters, digits \
         and `_`, not starting with a digit. Not together with `api_key`.",
    )))
}

/// `PATCH /admin/providers/{id}`: fields left out stay as they are; `null`
/// clears `api_key` / `api_key_env`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProvider {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = new_provider_name_schema)]
    pub name: Option<String>,
    /// New wire format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ProviderKind>,
    /// New base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = new_base_url_schema)]
    pub base_url: Option<String>,
    /// New key, or `null` to remove it.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = api_key_schema)]
    pub api_key: Option<Option<String>>,
    /// New key variable, or `null` to remove it.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = api_key_env_schema)]
    pub api_key_env: Option<Option<String>>,
    /// Enabled?
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

fn new_provider_name_schema() -> Object {
    or_null(provider_name_schema())
}

fn new_base_url_schema() -> Object {
    or_null(base_url_schema())
}

/// The rule about a provider body's key fields together: `api_key` and
/// `api_key_env` are not both given (`null` counts as not given).
pub fn one_key_schema() -> utoipa::openapi::Schema {
    let null = || ObjectBuilder::new().schema_type(Type::Null);
    let without = |field: &str| {
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .property(field, null())
            .build()
    };
    utoipa::openapi::schema::AnyOfBuilder::new()
        .item(without("api_key"))
        .item(without("api_key_env"))
        .build()
        .into()
}

/// A model config, as admins see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelConfig {
    /// Its id.
    pub id: ModelConfigId,
    /// Serving provider.
    pub provider_id: ProviderId,
    /// The provider's model name.
    pub model: String,
    /// What users see.
    pub display_name: String,
    /// Disabled models cannot be picked.
    pub enabled: bool,
    /// The model of chats that name none.
    pub is_default: bool,
    /// Titles are generated with it (at most one model is; without one,
    /// each chat's own model writes its title).
    pub use_for_titles: bool,
    /// Context window (tokens).
    pub context_limit: i32,
    /// Compact the history past this % of the window.
    pub compaction_threshold_pct: i16,
    /// Output cap per call.
    pub max_output_tokens: i32,
    /// Price per million input tokens, micro-dollars.
    pub price_input_micros_per_mtok: Option<i64>,
    /// Price per million output tokens.
    pub price_output_micros_per_mtok: Option<i64>,
    /// Price per million cache-read tokens.
    pub price_cache_read_micros_per_mtok: Option<i64>,
    /// Price per million cache-write tokens.
    pub price_cache_write_micros_per_mtok: Option<i64>,
    /// Provider-specific request options, merged into each request.
    #[schema(value_type = Object)]
    pub options: Value,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<&db::model_configs::ModelConfig> for ModelConfig {
    fn from(row: &db::model_configs::ModelConfig) -> Self {
        Self {
            id: row.id,
            provider_id: row.provider_id,
            model: row.model.clone(),
            display_name: row.display_name.clone(),
            enabled: row.enabled,
            is_default: row.is_default,
            use_for_titles: row.use_for_titles,
            context_limit: row.context_limit,
            compaction_threshold_pct: row.compaction_threshold_pct,
            max_output_tokens: row.max_output_tokens,
            price_input_micros_per_mtok: row.price_input_micros_per_mtok,
            price_output_micros_per_mtok: row.price_output_micros_per_mtok,
            price_cache_read_micros_per_mtok: row.price_cache_read_micros_per_mtok,
            price_cache_write_micros_per_mtok: row.price_cache_write_micros_per_mtok,
            options: row.options.clone(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// `POST /admin/model-configs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModelConfig {
    /// Serving provider.
    pub provider_id: ProviderId,
    /// The provider's model name.
    #[schema(schema_with = model_name_schema)]
    pub model: String,
    /// What users see (default: `model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = display_name_schema)]
    pub display_name: Option<String>,
    /// Enabled (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Make it the default (the previous default stops being one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_default: Option<bool>,
    /// Generate titles with it (the previous title model stops being one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_for_titles: Option<bool>,
    /// Context window (tokens).
    #[serde(deserialize_with = "whole")]
    #[schema(minimum = 1)]
    pub context_limit: i32,
    /// Compaction threshold %, 1–100 (default 70).
    #[serde(
        default,
        deserialize_with = "optional_whole",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 100)]
    pub compaction_threshold_pct: Option<i16>,
    /// Output cap per call (default 4096).
    #[serde(
        default,
        deserialize_with = "optional_whole",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1)]
    pub max_output_tokens: Option<i32>,
    /// Price per million input tokens, micro-dollars.
    #[serde(
        default,
        deserialize_with = "optional_whole",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 0)]
    pub price_input_micros_per_mtok: Option<i64>,
    /// Price per million output tokens.
    #[serde(
        default,
        deserialize_with = "optional_whole",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 0)]
    pub price_output_micros_per_mtok: Option<i64>,
    /// Price per million cache-read tokens.
    #[serde(
        default,
        deserialize_with = "optional_whole",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 0)]
    pub price_cache_read_micros_per_mtok: Option<i64>,
    /// Price per million cache-write tokens.
    #[serde(
        default,
        deserialize_with = "optional_whole",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 0)]
    pub price_cache_write_micros_per_mtok: Option<i64>,
    /// Request options (a JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = options_schema)]
    pub options: Option<Value>,
}

fn model_name_schema() -> ObjectBuilder {
    schema::trimmed_name(false, Some(MAX_MODEL_NAME)).description(Some(format!(
        "The provider's model name: 1–{MAX_MODEL_NAME} characters, no control characters \
         (white space around it is trimmed)."
    )))
}

fn display_name_schema() -> Object {
    or_null(
        schema::trimmed_name(false, Some(MAX_MODEL_NAME)).description(Some(format!(
            "What users see: 1–{MAX_MODEL_NAME} characters, no control characters (white \
             space around it is trimmed)."
        ))),
    )
}

fn options_schema() -> Object {
    or_null(schema::json_object().description(Some(
        "Provider-specific request options (a JSON object), merged into each request.",
    )))
}

/// `PATCH /admin/model-configs/{id}`: fields left out stay as they are;
/// `null` clears a price.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateModelConfig {
    /// New display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = display_name_schema)]
    pub display_name: Option<String>,
    /// Enabled?
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Make it the default (only `true` is accepted: pick another default to change it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = make_default_schema)]
    pub is_default: Option<bool>,
    /// `true`: generate titles with it (the previous title model stops being
    /// one); `false`: it stops being the title model (each chat's own model
    /// writes its title).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_for_titles: Option<bool>,
    /// New context window.
    #[serde(
        default,
        deserialize_with = "optional_whole",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1)]
    pub context_limit: Option<i32>,
    /// New compaction threshold %, 1–100.
    #[serde(
        default,
        deserialize_with = "optional_whole",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 100)]
    pub compaction_threshold_pct: Option<i16>,
    /// New output cap.
    #[serde(
        default,
        deserialize_with = "optional_whole",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1)]
    pub max_output_tokens: Option<i32>,
    /// New input price, or `null`.
    #[serde(
        default,
        deserialize_with = "nullable_whole",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<i64>, minimum = 0)]
    pub price_input_micros_per_mtok: Option<Option<i64>>,
    /// New output price, or `null`.
    #[serde(
        default,
        deserialize_with = "nullable_whole",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<i64>, minimum = 0)]
    pub price_output_micros_per_mtok: Option<Option<i64>>,
    /// New cache-read price, or `null`.
    #[serde(
        default,
        deserialize_with = "nullable_whole",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<i64>, minimum = 0)]
    pub price_cache_read_micros_per_mtok: Option<Option<i64>>,
    /// New cache-write price, or `null`.
    #[serde(
        default,
        deserialize_with = "nullable_whole",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<i64>, minimum = 0)]
    pub price_cache_write_micros_per_mtok: Option<Option<i64>>,
    /// New options (replaces the old ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = options_schema)]
    pub options: Option<Value>,
}

fn make_default_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::Boolean, Type::Null]))
        .enum_values(Some([Value::Bool(true), Value::Null]))
        .description(Some(
            "`true` makes it the default (the previous one stops being it); a default stops \
             being one only when another takes over, so `false` is refused.",
        ))
        .build()
}

/// A model users can pick (`GET /models`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Model {
    /// Its id (use as `model_config_id`).
    pub id: ModelConfigId,
    /// What to show.
    pub display_name: String,
    /// The provider's model name.
    pub model: String,
    /// Context window (tokens).
    pub context_limit: i32,
    /// True for the default model.
    pub is_default: bool,
}

/// `GET /models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelList {
    /// Enabled models.
    pub models: Vec<Model>,
}
