//! `portcullis serve`: load the config and policies (refusing to start on any
//! error), bind the listeners, start the background tasks (catalog watchers, session
//! expiry, config hot reload, SIGUSR1 catalog refresh, the audit writer), serve until
//! SIGINT/SIGTERM, then drain connections and flush the audit log.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::audit::{AuditLog, SHUTDOWN_FLUSH};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::policy::{PolicyEngine, watch};
use crate::server;

pub(crate) fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let engine = Arc::new(PolicyEngine::with_trust(
        &config.policies,
        config.policy_trust.clone(),
    )?);
    let chain = engine.current();
    tracing::info!(chain = %chain.names, digest = %chain.digest, "policy chain loaded");
    let workers = Arc::new(server::Workers::start(
        config.server.workers,
        config.server.idle_spin,
    )?);
    // The main runtime accepts connections and runs the background tasks; the
    // workers serve the connections (server::workers says why).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let served = rt.block_on(serve(config, engine, config_path, workers.clone()));
    crate::telemetry::shutdown(); // exports the last spans; the runtime is still up
    if let Ok(workers) = Arc::try_unwrap(workers) {
        workers.stop();
    }
    served
}

async fn serve(
    config: Config,
    engine: Arc<PolicyEngine>,
    config_path: &Path,
    workers: Arc<server::Workers>,
) -> anyhow::Result<()> {
    let listen = config.server.listen;
    let admin = config.admin.clone();
    crate::telemetry::start(&config.telemetry)?;
    let audit = AuditLog::start(&config.audit).await?;
    let gw = Gateway::new(config, engine.clone(), audit)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} (server.listen): {e}"))?;
    let addr = listener.local_addr()?;

    gw.catalog.spawn_watchers();
    let mut tasks = vec![gw.spawn_pin_sync()];
    gw.set_config_path(config_path);
    let live = gw.clone();
    tasks.push(watch::spawn(
        engine,
        config_path.to_path_buf(),
        move || {
            let _ = live.reload_config();
        },
    )?);
    let reaper = gw.clone();
    // Idle sessions (and their stdio processes) end within half their idle time.
    let sweep =
        (gw.config.server.session_idle / 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweep);
        loop {
            tick.tick().await;
            reaper.expire_sessions().await;
        }
    }));
    let refresher = gw.clone();
    let mut usr1 = signal(SignalKind::user_defined1())?;
    tasks.push(tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            tracing::info!("SIGUSR1: refreshing every connector's tool list");
            refresher.catalog.invalidate_all();
        }
    }));
    let connections = server::Connections::for_limit(server::descriptor_limit());
    if let Some(admin) = admin {
        let l = TcpListener::bind(admin.listen).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on {} (admin.listen): {e}", admin.listen)
        })?;
        println!("admin listening on http://{}", l.local_addr()?);
        let gw = gw.clone();
        tasks.push(tokio::spawn(server::serve(
            l,
            gw,
            server::admin::handle,
            None,
            connections.clone(),
            std::future::pending(),
        )));
    }

    println!("listening on http://{addr}/mcp");
    tracing::info!(%addr, connectors = gw.config.connectors.len(), agents = gw.config.agents.len(), workers = workers.count(), idle_spin_us = gw.config.server.idle_spin.as_micros() as u64, connection_budget = connections.budget(), "portcullis started");

    server::serve(
        listener,
        gw.clone(),
        server::mcp,
        Some(workers),
        connections,
        shutdown_signal(),
    )
    .await;
    tracing::info!("shutting down");
    gw.close_sessions().await;
    // Every row queued so far reaches the sink before the process exits.
    gw.audit.shutdown(SHUTDOWN_FLUSH).await;
    gw.catalog.stop_watchers();
    for t in tasks {
        t.abort();
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
