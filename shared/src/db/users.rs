//! `users`: who owns chats and holds tokens.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{DbResult, GenericClient};
use crate::{ids::UserId, status::UserRole};

/// A row of `users`.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Its id.
    pub id: UserId,
    /// Unique login name.
    pub username: String,
    /// Member or admin.
    pub role: UserRole,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl User {
    fn from_row(row: &Row) -> DbResult<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            username: row.try_get("username")?,
            role: row.try_get("role")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

const COLUMNS: &str = "id, username, role, created_at";

/// Inserts a user.
pub async fn insert(
    db: &impl GenericClient,
    id: UserId,
    username: &str,
    role: UserRole,
) -> DbResult<User> {
    let sql =
        format!("INSERT INTO users (id, username, role) VALUES ($1, $2, $3) RETURNING {COLUMNS}");
    let stmt = db.prepare_cached(&sql).await?;
    User::from_row(&db.query_one(&stmt, &[&id, &username, &role]).await?)
}

/// Inserts the user unless one with this name exists; returns the row either way.
pub async fn upsert_by_username(
    db: &impl GenericClient,
    username: &str,
    role: UserRole,
) -> DbResult<User> {
    let sql = format!(
        "INSERT INTO users (id, username, role) VALUES ($1, $2, $3)
         ON CONFLICT (username) DO UPDATE SET username = EXCLUDED.username
         RETURNING {COLUMNS}"
    );
    let stmt = db.prepare_cached(&sql).await?;
    User::from_row(
        &db.query_one(&stmt, &[&UserId::new_random(), &username, &role])
            .await?,
    )
}

/// Sets a user's role.
pub async fn set_role(db: &impl GenericClient, id: UserId, role: UserRole) -> DbResult<bool> {
    let stmt = db
        .prepare_cached("UPDATE users SET role = $2 WHERE id = $1")
        .await?;
    Ok(db.execute(&stmt, &[&id, &role]).await? == 1)
}

/// A user by id.
pub async fn get(db: &impl GenericClient, id: UserId) -> DbResult<Option<User>> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
    let stmt = db.prepare_cached(&sql).await?;
    db.query_opt(&stmt, &[&id])
        .await?
        .as_ref()
        .map(User::from_row)
        .transpose()
}

/// A user by name.
pub async fn get_by_username(db: &impl GenericClient, username: &str) -> DbResult<Option<User>> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE username = $1");
    let stmt = db.prepare_cached(&sql).await?;
    db.query_opt(&stmt, &[&username])
        .await?
        .as_ref()
        .map(User::from_row)
        .transpose()
}

/// Every user, by name.
pub async fn list(db: &impl GenericClient) -> DbResult<Vec<User>> {
    let sql = format!("SELECT {COLUMNS} FROM users ORDER BY username");
    let stmt = db.prepare_cached(&sql).await?;
    db.query(&stmt, &[])
        .await?
        .iter()
        .map(User::from_row)
        .collect()
}
