//! ext: `fs/watch`, `fs/unwatch` and the `fs/changed` notification: change events of a file or
//! directory tree (inotify on Linux), coalesced by the server. The reference has no `fs/watch`
//! (its only watch is `fs/watchMissing`); execd advertises it as the `fsWatch` capability of
//! `initialize`.

use serde::{Deserialize, Serialize};

use super::PathUri;

/// `fs/watch` params: `{watchId, path, recursive = false}`; the result is `{}`.
///
/// `watchId` is chosen by the client and must not name a live watch of the connection. A
/// directory watched without `recursive` reports changes to itself and its direct entries; with
/// `recursive`, to everything below it (subdirectories created later included). A file reports
/// changes to itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchParams {
    /// Client-chosen id, echoed in `fs/changed`.
    pub watch_id: u64,
    /// The file or directory to watch; it must exist.
    pub path: PathUri,
    /// Watch the whole tree below a directory.
    #[serde(default)]
    pub recursive: bool,
}

/// `fs/unwatch` params: `{watchId}`; the result is `{}` (also for an unknown id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnwatchParams {
    /// The watch to remove.
    pub watch_id: u64,
}

/// What happened to the paths of one `fs/changed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum FsChangeKind {
    /// `"create"`: the paths were created (a file, directory, link, or a rename target).
    Create,
    /// `"modify"`: their content or metadata (mode, owner, times) changed.
    Modify,
    /// `"remove"`: they were removed.
    Remove,
    /// `"rename"`: they were renamed (both the old and the new name are listed).
    Rename,
    /// `"rescan"`: events were lost (the kernel queue overflowed); `paths` is empty and the
    /// client should re-read what it watches.
    Rescan,
    /// `"other"`: a change the platform does not classify.
    Other,
}

impl FsChangeKind {
    /// The wire name (`"create"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            FsChangeKind::Create => "create",
            FsChangeKind::Modify => "modify",
            FsChangeKind::Remove => "remove",
            FsChangeKind::Rename => "rename",
            FsChangeKind::Rescan => "rescan",
            FsChangeKind::Other => "other",
        }
    }
}

/// Notification `fs/changed {watchId, kind, paths, truncated}`: changes of one kind seen by
/// watch `watchId` within one coalescing window. `paths` are PathUris, each listed once, in the
/// order first seen; `truncated` is true when more paths changed than the window's bound and
/// some were left out (re-read the tree).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangedNotification {
    /// The watch.
    pub watch_id: u64,
    /// What happened.
    pub kind: FsChangeKind,
    /// The paths it happened to.
    pub paths: Vec<PathUri>,
    /// Some paths of this kind were left out.
    #[serde(default)]
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn params_and_notification_shapes() {
        let p: WatchParams =
            serde_json::from_value(json!({"watchId": 3, "path": "file:///t"})).expect("decodes");
        assert!(!p.recursive);
        assert!(
            serde_json::from_value::<WatchParams>(json!({"watchId": 3, "path": "/t"})).is_err()
        );
        let n = ChangedNotification {
            watch_id: 3,
            kind: FsChangeKind::Create,
            paths: vec![PathUri::parse("file:///t/a").expect("uri")],
            truncated: false,
        };
        assert_eq!(
            serde_json::to_value(&n).expect("ok"),
            json!({"watchId": 3, "kind": "create", "paths": ["file:///t/a"], "truncated": false})
        );
        assert_eq!(FsChangeKind::Rescan.as_str(), "rescan");
    }
}
