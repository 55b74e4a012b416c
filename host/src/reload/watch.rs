//! Reload when the configuration file or a component in the plugin folder changes.
//!
//! Folders are watched, not files: editors save by writing a temporary file and renaming it
//! over the original, which replaces the file a file watch would follow. Changes are debounced
//! (a reload starts once the folder has been quiet for [`QUIET`]), so a file copied in over
//! several writes is read once it is whole; if a reload still catches a file half-written, the
//! file fails to load, the old state keeps serving, and the write that completes it triggers
//! the next reload.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{Reloader, Trigger};

/// How long the watched folders must be quiet before a reload starts.
pub const QUIET: Duration = Duration::from_millis(75);

/// What to watch: the configuration file's folder and the plugin folder.
struct Watched {
    config_file: PathBuf,
    config_dir: PathBuf,
    plugin_dir: PathBuf,
    /// Whether the plugin folder gets a watch of its own: it exists (a configuration without
    /// filters may name one that does not) and is not the configuration's folder. Decided when
    /// this is made, not when asked, so that a folder created since shows up as a change.
    plugin_dir_watched: bool,
}

impl Watched {
    fn of(reloader: &Reloader) -> Watched {
        let config_file = canonical(reloader.config_path());
        let config_dir = config_file
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let plugin_dir = canonical(&reloader.plugin_dir());
        let plugin_dir_watched = plugin_dir != config_dir && plugin_dir.is_dir();
        Watched {
            config_file,
            config_dir,
            plugin_dir,
            plugin_dir_watched,
        }
    }

    /// Whether an event concerns the configuration or a component.
    fn concerns(&self, event: &Event) -> bool {
        if matches!(event.kind, EventKind::Access(_)) {
            return false;
        }
        event.paths.iter().any(|path| {
            // The plugin folder itself appearing (or going) changes what can load.
            path == &self.config_file
                || path == &self.plugin_dir
                || (path.parent() == Some(self.plugin_dir.as_path())
                    && path
                        .extension()
                        .is_some_and(|extension| extension == "wasm"))
        })
    }

    fn start(&self, watcher: &mut RecommendedWatcher) -> notify::Result<()> {
        watcher.watch(&self.config_dir, RecursiveMode::NonRecursive)?;
        if self.plugin_dir_watched {
            watcher.watch(&self.plugin_dir, RecursiveMode::NonRecursive)?;
        } else if !self.plugin_dir.is_dir() {
            tracing::warn!(plugins = %self.plugin_dir.display(), "the plugin folder does not exist; not watched");
        }
        Ok(())
    }

    fn stop(&self, watcher: &mut RecommendedWatcher) {
        let _ = watcher.unwatch(&self.config_dir);
        if self.plugin_dir_watched {
            let _ = watcher.unwatch(&self.plugin_dir);
        }
    }
}

/// The path with links and `..` resolved, as the watcher reports paths; as given if it does
/// not exist (yet).
fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// Starts watching; runs until the process ends. Fails only if the watcher cannot start.
pub fn spawn(reloader: Arc<Reloader>) -> notify::Result<()> {
    let (events, mut receiver) = mpsc::unbounded_channel::<notify::Result<Event>>();
    let mut watcher = notify::recommended_watcher(move |event| {
        // The receiver lives as long as the process; nothing to do if it is gone.
        let _ = events.send(event);
    })?;
    let mut watched = Watched::of(&reloader);
    watched.start(&mut watcher)?;
    tracing::info!(
        config = %watched.config_file.display(),
        plugins = %watched.plugin_dir.display(),
        "watching for changes"
    );

    let mut applied = reloader.applied();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                event = receiver.recv() => {
                    let Some(event) = event else { return };
                    if !relevant(&watched, event) {
                        continue;
                    }
                    // Debounce: wait for the folders to go quiet.
                    loop {
                        match tokio::time::timeout(QUIET, receiver.recv()).await {
                            Ok(Some(_)) => continue,
                            Ok(None) => return,
                            Err(_) => break,
                        }
                    }
                    reloader.reload(Trigger::Watch).await;
                }
                // A reload from the admin API or SIGHUP may also have moved the plugin folder.
                changed = applied.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            // The plugin folder may have moved, or the configured one may exist now.
            let now = Watched::of(&reloader);
            if now.plugin_dir != watched.plugin_dir
                || now.plugin_dir_watched != watched.plugin_dir_watched
            {
                watched.stop(&mut watcher);
                if let Err(error) = now.start(&mut watcher) {
                    tracing::error!(%error, plugins = %now.plugin_dir.display(), "cannot watch the new plugin folder");
                }
                watched = now;
            }
        }
    });
    Ok(())
}

fn relevant(watched: &Watched, event: notify::Result<Event>) -> bool {
    match event {
        Ok(event) => watched.concerns(&event),
        Err(error) => {
            tracing::warn!(%error, "file watcher error; reloading to be safe");
            true
        }
    }
}
