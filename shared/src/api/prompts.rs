//! System prompts (DESIGN §17): the deployment's (`/admin/system-prompt`)
//! and each user's own (`/users/me/prompt`). Every model call gets them in
//! that order, then the chat's `system_prompt`.

use serde::{Deserialize, Serialize};

/// Characters the deployment's system prompt has at most.
pub const MAX_DEPLOYMENT_PROMPT: usize = 100_000;

/// Characters a user's custom prompt has at most.
pub const MAX_CUSTOM_PROMPT: usize = 20_000;

/// `GET`/`PUT /admin/system-prompt`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemPrompt {
    /// The deployment's system prompt ("" for none): at most 100,000
    /// characters, no NUL.
    pub system_prompt: String,
}

/// `GET`/`PUT /users/me/prompt`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomPrompt {
    /// The caller's own system prompt ("" for none): at most 20,000
    /// characters, no NUL.
    pub custom_prompt: String,
}
