//! System prompts (ARCHITECTURE.md §17): the deployment's (`/admin/system-prompt`)
//! and each user's own (`/users/me/prompt`). Every model call gets them in
//! that order, then the chat's `system_prompt`.

use serde::{Deserialize, Serialize};
use utoipa::openapi::ObjectBuilder;

use super::schema;

/// Characters the deployment's system prompt has at most.
pub const MAX_DEPLOYMENT_PROMPT: usize = 100_000;

/// Characters a user's custom prompt has at most.
pub const MAX_CUSTOM_PROMPT: usize = 20_000;

/// `GET`/`PUT /admin/system-prompt`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemPrompt {
    /// The deployment's system prompt ("" for none).
    #[schema(schema_with = deployment_prompt_schema)]
    pub system_prompt: String,
}

fn deployment_prompt_schema() -> ObjectBuilder {
    schema::text(Some(MAX_DEPLOYMENT_PROMPT)).description(Some(format!(
        "The deployment's system prompt (\"\" for none), at most {MAX_DEPLOYMENT_PROMPT} characters."
    )))
}

/// `GET`/`PUT /users/me/prompt`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomPrompt {
    /// The caller's own system prompt ("" for none).
    #[schema(schema_with = custom_prompt_schema)]
    pub custom_prompt: String,
}

fn custom_prompt_schema() -> ObjectBuilder {
    schema::text(Some(MAX_CUSTOM_PROMPT)).description(Some(format!(
        "The caller's own system prompt (\"\" for none), at most {MAX_CUSTOM_PROMPT} characters."
    )))
}
