use std::process::ExitCode;

use clap::Parser;
use integration_service::{
    config::{Action, Cli},
    startup::{self, Application, open_store},
    telemetry,
};
use tracing::{error, info};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = match telemetry::init(&cli.telemetry()) {
        Ok(telemetry) => telemetry,
        Err(message) => {
            error!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.action() {
        Ok(Action::Serve(settings)) => serve(settings).await,
        Ok(Action::Migrate(options)) => migrate(options).await,
        Ok(Action::HealthCheck(check)) => health_check(check).await,
        Err(message) => Err(message),
    };
    telemetry.shutdown().await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: integration_service::config::Settings) -> Result<(), String> {
    let app = Application::build(settings)
        .await
        .map_err(|e| e.to_string())?;
    app.run_until_stopped(shutdown_signal())
        .await
        .map_err(|e| format!("the server failed: {e}"))
}

async fn migrate(options: integration_service::config::DatabaseSettings) -> Result<(), String> {
    let store = open_store(&options).await.map_err(|e| e.to_string())?;
    let applied = store
        .migrate()
        .await
        .map_err(|e| startup::migrate_error(&e).to_string())?;
    startup::log_migrations(&applied);
    Ok(())
}

async fn health_check(
    check: integration_service::config::HealthCheckSettings,
) -> Result<(), String> {
    let status = integration_service::health::check(&check)
        .await
        .map_err(|e| e.to_string())?;
    info!(address = %check.address, service = %check.service, status, "health");
    if status == "SERVING" {
        Ok(())
    } else {
        Err(format!("{} is {status}", check.address))
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("received Ctrl-C"),
        () = terminate => info!("received SIGTERM"),
    }
}
