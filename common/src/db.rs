//! PostgreSQL pool and the project's migrations (`migrations/` at the repository root).
//!
//! sqlx takes a PostgreSQL advisory lock while migrating, so concurrent services starting at
//! once never race.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Connects lazily: the pool opens connections on first use, so a service can start (and
/// report not-ready) while the database is still coming up.
pub fn pool_lazy(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let opts: PgConnectOptions = url.parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(opts.application_name("vigil")))
}

/// Applies every pending migration (under sqlx's advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// True when every migration this build knows is applied.
pub async fn migrations_applied(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(pool).await?;
    if !exists {
        return Ok(latest == 0);
    }
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success").fetch_one(pool).await?;
    Ok(applied.unwrap_or(0) >= latest)
}

/// The database's state for `/health`: reachable, and every migration this build knows applied.
pub async fn check(pool: &PgPool) -> Result<(), String> {
    match migrations_applied(pool).await {
        Ok(true) => Ok(()),
        Ok(false) => Err("reachable, but the migrations are not all applied".to_owned()),
        Err(e) => Err(format!("database unreachable: {e}")),
    }
}
