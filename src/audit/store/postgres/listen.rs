//! Wake-ups across the fleet: a thread with its own connection LISTENs on
//! the channel every append notifies, so a process learns within
//! milliseconds that another one wrote to an action it waits on. Losing the
//! connection loses nothing but speed: the store also polls.

use std::thread::JoinHandle;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;

use super::{explain, fixed_password, PasswordSource, Target, CHANNEL};
use crate::audit::store::StoreError;

/// How long a quiet connection waits before it is probed.
const QUIET: Duration = Duration::from_secs(30);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Connects now (so a wrong password or host is reported at start), then
/// calls `on_action(action_id)` from a thread of its own for every action
/// any process appends to. After a lost connection it reconnects with
/// backoff and calls `on_action("")`: notifications may have been missed,
/// re-check everything.
pub fn listen(
    dsn: &str,
    password: Option<&str>,
    ca_file: Option<&std::path::Path>,
    on_action: impl Fn(String) + Send + 'static,
) -> Result<JoinHandle<()>, StoreError> {
    listen_with(dsn, fixed_password(password), ca_file, on_action)
}

/// [`listen`], asking `password` for the password at every reconnection
/// (so a rotated password file is picked up by a listener that lives as
/// long as the process).
pub fn listen_with(
    dsn: &str,
    password: PasswordSource,
    ca_file: Option<&std::path::Path>,
    on_action: impl Fn(String) + Send + 'static,
) -> Result<JoinHandle<()>, StoreError> {
    let target = Target::new(dsn, password, ca_file)?;
    let client = subscribe(&target)?;
    std::thread::Builder::new()
        .name("countersign-pg-listen".into())
        .spawn(move || run(target, client, on_action))
        .map_err(StoreError::Writer)
}

fn subscribe(target: &Target) -> Result<Client, StoreError> {
    let mut client = target.connect()?;
    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    Ok(client)
}

fn run(target: Target, mut client: Client, on_action: impl Fn(String)) {
    loop {
        let lost = pump(&mut client, &on_action);
        tracing::warn!(error = %lost, store = %target.what, "lost the PostgreSQL notification connection; reconnecting");
        let mut backoff = Duration::from_millis(100);
        client = loop {
            std::thread::sleep(backoff);
            match subscribe(&target) {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot reconnect for notifications yet");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        tracing::info!(store = %target.what, "notification connection restored");
        on_action(String::new());
    }
}

/// Delivers notifications until the connection fails; returns why.
fn pump(client: &mut Client, on_action: &impl Fn(String)) -> String {
    loop {
        {
            let mut notifications = client.notifications();
            let mut it = notifications.timeout_iter(QUIET);
            loop {
                match it.next() {
                    Ok(Some(n)) => {
                        if n.channel() == CHANNEL {
                            on_action(n.payload().to_string());
                        }
                    }
                    // Quiet for a while, or the server went away: probe below.
                    Ok(None) => break,
                    Err(e) => return explain(&e),
                }
            }
        }
        if client.is_closed() {
            return "connection closed".into();
        }
        if let Err(e) = client.is_valid(Duration::from_secs(10)) {
            return explain(&e);
        }
    }
}
