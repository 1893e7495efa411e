//! The routes of system prompts, spend limits and usage (ARCHITECTURE.md §17).

use chrono::NaiveDate;
use reqwest::Method;

use super::{Client, ClientError, append_query};
use crate::{
    api::{
        CustomPrompt, Spend, SpendLimits, SystemPrompt, UsageReport, UserSpendLimit,
        UserSpendLimitSet,
    },
    ids::UserId,
};

/// The query of the usage routes; fields left `None` are not sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageRange<'a> {
    /// First day counted.
    pub from: Option<NaiveDate>,
    /// Last day counted.
    pub to: Option<NaiveDate>,
    /// `day`, `model` or (admins) `user`.
    pub group_by: Option<&'a str>,
}

impl Client {
    /// `GET /admin/system-prompt`.
    pub async fn system_prompt(&self) -> Result<SystemPrompt, ClientError> {
        self.fetch(self.route(Method::GET, "admin/system-prompt")?)
            .await
    }

    /// `PUT /admin/system-prompt`.
    pub async fn set_system_prompt(&self, prompt: &str) -> Result<SystemPrompt, ClientError> {
        let body = SystemPrompt {
            system_prompt: prompt.to_owned(),
        };
        self.fetch(self.route(Method::PUT, "admin/system-prompt")?.json(&body))
            .await
    }

    /// `GET /users/me/prompt`.
    pub async fn my_prompt(&self) -> Result<CustomPrompt, ClientError> {
        self.fetch(self.route(Method::GET, "users/me/prompt")?)
            .await
    }

    /// `PUT /users/me/prompt`.
    pub async fn set_my_prompt(&self, prompt: &str) -> Result<CustomPrompt, ClientError> {
        let body = CustomPrompt {
            custom_prompt: prompt.to_owned(),
        };
        self.fetch(self.route(Method::PUT, "users/me/prompt")?.json(&body))
            .await
    }

    /// `GET /admin/spend-limits`.
    pub async fn spend_limits(&self) -> Result<SpendLimits, ClientError> {
        self.fetch(self.route(Method::GET, "admin/spend-limits")?)
            .await
    }

    /// `PUT /admin/spend-limits`.
    pub async fn set_spend_limits(&self, limits: &SpendLimits) -> Result<SpendLimits, ClientError> {
        self.fetch(self.route(Method::PUT, "admin/spend-limits")?.json(limits))
            .await
    }

    /// `PUT /admin/users/{id}/spend-limit`.
    pub async fn set_user_spend_limit(
        &self,
        user_id: UserId,
        limit_micros: Option<i64>,
    ) -> Result<UserSpendLimitSet, ClientError> {
        let path = format!("admin/users/{user_id}/spend-limit");
        let body = UserSpendLimit { limit_micros };
        self.fetch(self.route(Method::PUT, &path)?.json(&body))
            .await
    }

    /// `GET /users/me/spend`.
    pub async fn my_spend(&self) -> Result<Spend, ClientError> {
        self.fetch(self.route(Method::GET, "users/me/spend")?).await
    }

    /// `GET /users/me/usage`.
    pub async fn my_usage(&self, range: &UsageRange<'_>) -> Result<UsageReport, ClientError> {
        self.usage("users/me/usage", range).await
    }

    /// `GET /admin/usage`.
    pub async fn admin_usage(&self, range: &UsageRange<'_>) -> Result<UsageReport, ClientError> {
        self.usage("admin/usage", range).await
    }

    async fn usage(&self, path: &str, range: &UsageRange<'_>) -> Result<UsageReport, ClientError> {
        let mut url = self.endpoint(path)?;
        append_query(&mut url, "from", range.from);
        append_query(&mut url, "to", range.to);
        append_query(&mut url, "group_by", range.group_by);
        self.fetch(self.request(Method::GET, url)).await
    }
}
