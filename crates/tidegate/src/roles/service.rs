//! The service roles: `migrate`, `serve` (API, ops listener and, unless told not to, the
//! background worker) and `worker`.

use crate::configuration::Settings;
use crate::startup::{self, Application};

pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let pool = store::connect_lazy(settings.connect_options()?, &settings.db_settings());
    store::MIGRATOR.run(&pool).await?;
    println!("migrations applied ({} known)", store::MIGRATOR.iter().count());
    Ok(())
}

pub async fn serve(settings: Settings, no_worker: bool) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    let app = if no_worker { app.without_worker() } else { app };
    app.run_until(startup::shutdown_signal()).await
}

pub async fn worker(settings: Settings) -> anyhow::Result<()> {
    startup::run_worker(settings, startup::shutdown_signal()).await
}
