//! Volumes of detached containers (`run -d -v host:ctr`).
//!
//! The container keeps using its guest copy after the CLI returns (the old tool deleted it
//! right away, docs/old-bugs.md §13). What was pushed is recorded in `live-volumes.json` in the
//! state dir, keyed by the container's name and id, and the container's changes come back
//! with the same manifest rules as a foreground volume (dotfiles kept, nothing the container
//! did not change touched) when the tool stops, kills or removes the container (by name or
//! id prefix) and before the memres VM stops. The guest copy is not a shared filesystem:
//! changes made on the host while the container runs are not seen inside; a `start` of the
//! stopped container refreshes its copy from the host first.
//!
//! Only for volumes a memres VM does not share: shared ones are live binds of the host
//! directory (see `shared`) and nothing is recorded here.
//!
//! While such a record exists, the supervisor's idle stop waits (see
//! `vm::supervisor`), so an idle timeout never throws the container's writes away.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::{scan, sync_back, Manifest, Volume};
use crate::runner::target::Target;
use crate::runner::transfer::{self, PushSource};
use crate::vm::instance::{write_atomic, LIVE_VOLUMES_JSON};
use crate::vm::records;

/// One rw volume of a detached container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveVolume {
    pub host: PathBuf,
    pub guest: String,
    /// The host state the guest copy started from (updated after each sync).
    pub manifest: Manifest,
}

/// The rw volumes of one detached container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The guest dir holding the copies (removed with the container).
    pub run_dir: String,
    pub volumes: Vec<LiveVolume>,
}

impl LiveRecord {
    /// `stop web`, `rm 3f2a...` (any prefix of the id, as docker accepts).
    fn matches(&self, operand: &str) -> bool {
        !operand.is_empty()
            && (self.container.as_deref() == Some(operand)
                || self
                    .container_id
                    .as_deref()
                    .is_some_and(|id| id.starts_with(operand)))
    }
}

pub fn load(state: &Path) -> Vec<LiveRecord> {
    crate::vm::records::load(state, LIVE_VOLUMES_JSON)
}

fn save(state: &Path, all: &[LiveRecord]) -> anyhow::Result<()> {
    let path = state.join(LIVE_VOLUMES_JSON);
    if all.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        };
    }
    write_atomic(
        &path,
        &serde_json::to_vec(all).context("encoding live-volumes.json")?,
    )?;
    Ok(())
}

/// Records the rw volumes of a started detached container; nothing when it has none.
pub fn record(
    state: &Path,
    container: Option<String>,
    container_id: Option<String>,
    run_dir: &str,
    volumes: &[Volume],
) -> anyhow::Result<()> {
    let volumes: Vec<LiveVolume> = volumes
        .iter()
        .filter(|v| !v.read_only)
        .map(|v| LiveVolume {
            host: v.host.clone(),
            guest: v.guest.clone(),
            manifest: v.manifest.clone(),
        })
        .collect();
    if volumes.is_empty() {
        return Ok(());
    }
    let _lock = records::lock(state, LIVE_VOLUMES_JSON)?;
    let mut all = load(state);
    all.push(LiveRecord {
        container,
        container_id,
        run_dir: run_dir.to_string(),
        volumes,
    });
    save(state, &all)
}

/// Brings one record's changes back; returns the problems met. With `rebase`, each
/// volume's manifest becomes the host state after the sync, so a later sync (the container
/// restarted and stopped again) applies only what changed since.
fn sync_record(target: &mut Target, rec: &mut LiveRecord, rebase: bool) -> Vec<String> {
    let mut problems = Vec::new();
    for lv in rec.volumes.iter_mut() {
        let vol = Volume {
            host: lv.host.clone(),
            guest: lv.guest.clone(),
            read_only: false,
            manifest: lv.manifest.clone(),
        };
        match sync_back(target, &vol) {
            Ok(report) => {
                for s in report.skipped {
                    problems.push(format!("volume {}: {s}", lv.host.display()));
                }
                tracing::debug!(volume = %lv.host.display(), written = report.written, deleted = report.deleted, "live volume synced back");
            }
            Err(e) => problems.push(format!(
                "syncing volume {} back failed: {e:#}",
                lv.host.display()
            )),
        }
        if rebase {
            match scan(&lv.host) {
                Ok(m) => lv.manifest = m,
                Err(e) => problems.push(format!("{e:#}")),
            }
        }
    }
    problems
}

/// After `stop`/`kill` (`removed` false) or `rm` (`removed` true) of `operands` (names or id
/// prefixes): syncs the matching containers' volumes back. A removed container's record
/// and guest copies go; a stopped one's stay for a later `start`.
pub fn release(target: &mut Target, operands: &[String], removed: bool) -> Vec<String> {
    let Some(state) = target.instance().map(|i| i.state_dir.clone()) else {
        return Vec::new();
    };
    let all = load(&state);
    if all.is_empty() {
        return Vec::new();
    }
    let mut hit: Vec<LiveRecord> = all
        .into_iter()
        .filter(|r| operands.iter().any(|o| r.matches(o)))
        .collect();
    if hit.is_empty() {
        return Vec::new();
    }
    let mut problems = Vec::new();
    for rec in hit.iter_mut() {
        problems.extend(sync_record(target, rec, !removed));
        if removed {
            if let Err(e) = target.exec_quiet(&["rm", "-rf", &rec.run_dir]) {
                tracing::debug!("removing {}: {e:#}", rec.run_dir);
            }
        }
    }
    // other commands may have added records meanwhile: merge with the file as it is now
    let _lock = match records::lock(&state, LIVE_VOLUMES_JSON) {
        Ok(l) => l,
        Err(e) => {
            problems.push(format!("{e:#}"));
            return problems;
        }
    };
    let mut now = load(&state);
    now.retain(|r| !operands.iter().any(|o| r.matches(o)));
    if !removed {
        now.extend(hit);
    }
    if let Err(e) = save(&state, &now) {
        problems.push(format!("{e:#}"));
    }
    problems
}

/// Before `start` of `operands` (names or id prefixes): a stopped detached container's
/// guest copies are replaced by the host's current state, so what changed on the host while
/// it was stopped (its own changes came back at `stop`) is what it sees when it runs again.
/// A running container's copies are never touched. `runtime` is the guest CLI (`docker`).
pub fn refresh(target: &mut Target, runtime: &str, operands: &[String]) -> Vec<String> {
    let Some(state) = target.instance().map(|i| i.state_dir.clone()) else {
        return Vec::new();
    };
    let mut all = load(&state);
    let mut problems = Vec::new();
    let mut changed = false;
    for rec in all
        .iter_mut()
        .filter(|r| operands.iter().any(|o| r.matches(o)))
    {
        let Some(who) = rec.container_id.clone().or_else(|| rec.container.clone()) else {
            continue;
        };
        match target.exec_capture(&[runtime, "inspect", "--format", "{{.State.Running}}", &who]) {
            Ok((status, out, _)) if status.success() && out.trim_ascii() == b"false" => {}
            _ => continue, // running, or gone: leave it alone
        }
        for lv in rec.volumes.iter_mut() {
            if let Err(e) = push_again(target, lv) {
                problems.push(format!(
                    "refreshing volume {} for {who}: {e:#}",
                    lv.host.display()
                ));
            }
        }
        changed = true;
    }
    if changed {
        // merge into the file as it is now: other commands may have changed other records
        let saved = records::lock(&state, LIVE_VOLUMES_JSON).and_then(|_lock| {
            let mut now = load(&state);
            now.retain(|r| !operands.iter().any(|o| r.matches(o)));
            now.extend(
                all.into_iter()
                    .filter(|r| operands.iter().any(|o| r.matches(o))),
            );
            save(&state, &now)
        });
        if let Err(e) = saved {
            problems.push(format!("{e:#}"));
        }
    }
    problems
}

/// Makes the guest copy equal to the host again and records that as the new baseline.
fn push_again(target: &mut Target, lv: &mut LiveVolume) -> anyhow::Result<()> {
    let manifest = scan(&lv.host)?;
    let is_dir = manifest
        .entries
        .get(Path::new(""))
        .is_some_and(|e| e.kind == super::Kind::Dir);
    if is_dir {
        // the directory itself is the container's bind mount source: empty it, keep it
        target.exec_quiet(&["find", &lv.guest, "-mindepth", "1", "-delete"])?;
        transfer::push(target, PushSource::DirContents(&lv.host), &lv.guest)?;
    } else {
        let (parent, name) = super::split_guest(&lv.guest)?;
        transfer::push(
            target,
            PushSource::Named {
                path: &lv.host,
                name,
            },
            parent,
        )?;
    }
    lv.manifest = manifest;
    Ok(())
}

/// Before the memres VM stops: every detached container's volumes come back, and the
/// records go with the VM.
pub fn release_all(target: &mut Target) -> Vec<String> {
    let Some(state) = target.instance().map(|i| i.state_dir.clone()) else {
        return Vec::new();
    };
    let mut all = load(&state);
    let mut problems = Vec::new();
    for rec in all.iter_mut() {
        problems.extend(sync_record(target, rec, false));
    }
    let saved = records::lock(&state, LIVE_VOLUMES_JSON).and_then(|_lock| save(&state, &[]));
    if let Err(e) = saved {
        problems.push(format!("{e:#}"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_records_are_all_kept() {
        // 6 `run -d -v` at once: each process loads, appends and saves under the lock
        let t = tempfile::tempdir().expect("tmp");
        let host = t.path().join("src");
        std::fs::create_dir(&host).expect("mkdir");
        let manifest = scan(&host).expect("scan");
        let threads: Vec<_> = (0..6)
            .map(|i| {
                let (state, host, manifest) =
                    (t.path().to_path_buf(), host.clone(), manifest.clone());
                std::thread::spawn(move || {
                    for round in 0..5 {
                        let vol = Volume {
                            host: host.clone(),
                            guest: format!("/g/{i}/{round}"),
                            read_only: false,
                            manifest: manifest.clone(),
                        };
                        record(&state, Some(format!("c{i}-{round}")), None, "/r", &[vol])
                            .expect("record");
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().expect("thread");
        }
        assert_eq!(load(t.path()).len(), 30);
    }

    #[test]
    fn records_round_trip_match_by_name_or_id_prefix_and_vanish_when_empty() {
        let t = tempfile::tempdir().expect("tmp");
        let host = t.path().join("src");
        std::fs::create_dir(&host).expect("mkdir");
        std::fs::write(host.join(".env"), "x").expect("w");
        let vol = |ro| Volume {
            host: host.clone(),
            guest: "/tmp/vcontainer-io/r1/vol0".into(),
            read_only: ro,
            manifest: scan(&host).expect("scan"),
        };
        // read-only volumes never come back: nothing to record
        record(t.path(), Some("web".into()), None, "/r1", &[vol(true)]).expect("record");
        assert!(!t.path().join(LIVE_VOLUMES_JSON).exists());
        record(
            t.path(),
            Some("web".into()),
            Some("3f2a9c0d11ee".into()),
            "/r1",
            &[vol(false)],
        )
        .expect("record");
        let r = &load(t.path())[0];
        assert!(r.matches("web") && r.matches("3f2a") && !r.matches("we") && !r.matches(""));
        assert_eq!(r.volumes[0].manifest.entries.len(), 2, "{r:?}");
        assert!(r.volumes[0]
            .manifest
            .entries
            .contains_key(Path::new(".env")));
        save(t.path(), &[]).expect("save");
        assert!(!t.path().join(LIVE_VOLUMES_JSON).exists());
    }
}
