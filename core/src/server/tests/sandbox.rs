//! `sandbox` on `process/start` and on `fs/*` requests: decoded, resolved into the
//! [`SpawnSpec`](crate::SpawnSpec) or checked on the fs paths, reported as `sandboxType`.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::Harness;
use crate::protocol::SandboxType;
use crate::sandbox::FsRules;
use crate::server::{Command, ProcessEvent, SpawnErrorKind};

/// Codex's workspace-write object for workspace `/w`.
fn workspace_write() -> Value {
    json!({"permissions": {"type": "managed", "file_system": {"type": "restricted", "entries": [
        {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
        {"path": {"type": "special", "value": {"kind": "project_roots"}}, "access": "write"},
        {"path": {"type": "path", "path": "file:///w/secret"}, "access": "deny"},
    ]}, "network": "restricted"},
    "cwd": "file:///w", "workspaceRoots": ["file:///w"], "windowsSandboxLevel": "disabled"})
}

fn start_params(sandbox: Value) -> Value {
    json!({"processId": "p", "argv": ["true"], "cwd": "file:///w", "env": {}, "tty": false,
           "sandbox": sandbox})
}

#[test]
fn sandboxed_start_carries_the_policy_and_answers_linux_seccomp() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    h.call(conn, 1, "process/start", start_params(workspace_write()));
    let key = match h.take_commands().as_slice() {
        [Command::Spawn { key, spec }] => {
            assert_eq!(spec.sandbox, SandboxType::LinuxSeccomp);
            let policy = spec.sandbox_policy.as_ref().expect("a policy");
            assert!(!policy.network);
            let FsRules::Restricted(fs) = &policy.file_system else {
                panic!("restricted expected");
            };
            assert_eq!(fs.writable[0].root, PathBuf::from("/w"));
            assert_eq!(fs.denied, [PathBuf::from("/w/secret")]);
            *key
        }
        other => panic!("{other:?}"),
    };
    h.event(key, ProcessEvent::Spawned { pid: 7 });
    let r = h.response(conn, 1);
    assert_eq!(r["result"]["sandboxType"], "linuxSeccomp");
}

#[test]
fn null_and_disabled_sandboxes_run_unsandboxed() {
    for sandbox in [
        Value::Null,
        json!({"permissions": {"type": "disabled"}, "windowsSandboxLevel": "disabled"}),
    ] {
        let mut h = Harness::new();
        let (conn, _) = h.session();
        h.call(conn, 1, "process/start", start_params(sandbox));
        let key = match h.take_commands().as_slice() {
            [Command::Spawn { key, spec }] => {
                assert_eq!(spec.sandbox_policy, None);
                *key
            }
            other => panic!("{other:?}"),
        };
        h.event(key, ProcessEvent::Spawned { pid: 7 });
        assert_eq!(h.response(conn, 1)["result"]["sandboxType"], "none");
    }
}

#[test]
fn malformed_sandbox_is_invalid_params_and_spawns_nothing() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let mut bad = workspace_write();
    bad["permissions"]["type"] = json!("bogus");
    let r = h.call(conn, 1, "process/start", start_params(bad));
    assert_eq!(r[0]["error"]["code"], -32602);
    assert_eq!(
        r[0]["error"]["message"],
        "unknown variant `bogus`, expected one of `managed`, `disabled`, `external`"
    );
    let mut bad = workspace_write();
    bad.as_object_mut()
        .expect("object")
        .remove("windowsSandboxLevel");
    let r = h.call(conn, 2, "process/start", start_params(bad));
    assert_eq!(
        r[0]["error"]["message"],
        "missing field `windowsSandboxLevel`"
    );
    assert!(h.take_commands().is_empty());
    // The connection keeps working.
    h.call(conn, 3, "process/start", start_params(Value::Null));
    assert_eq!(h.take_commands().len(), 1);
}

#[test]
fn a_sandbox_the_runtime_cannot_build_fails_the_start_with_invalid_params() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    h.call(conn, 1, "process/start", start_params(workspace_write()));
    let key = h.take_spawn();
    h.event(
        key,
        ProcessEvent::SpawnFailed {
            kind: SpawnErrorKind::Sandbox,
            error: "failed to prepare process sandbox: Landlock is not supported".into(),
        },
    );
    let r = h.response(conn, 1);
    assert_eq!(r["error"]["code"], -32602);
    assert_eq!(r["error"]["data"]["kind"], "sandbox");
    // The entry is gone: the id is free again.
    h.call(conn, 2, "process/start", start_params(Value::Null));
    assert_eq!(h.take_commands().len(), 1);
}

#[test]
fn sandboxed_fs_writes_outside_the_roots_are_read_only_errors() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let write = |path: &str| json!({"path": format!("file://{path}"), "dataBase64": "aGkK", "sandbox": workspace_write()});
    let r = h.call(conn, 1, "fs/writeFile", write("/etc/x"));
    assert_eq!(r[0]["error"]["code"], -32603);
    assert_eq!(
        r[0]["error"]["message"],
        "Read-only file system (os error 30)"
    );
    let r = h.call(conn, 2, "fs/writeFile", write("/w/.git/config"));
    assert_eq!(r[0]["error"]["code"], -32603);
    let r = h.call(
        conn,
        3,
        "fs/createDirectory",
        json!({"path": "file:///opt/d", "sandbox": workspace_write()}),
    );
    assert_eq!(r[0]["error"]["code"], -32603);
    let r = h.call(
        conn,
        4,
        "fs/readFile",
        json!({"path": "file:///w/secret/k", "sandbox": workspace_write()}),
    );
    assert_eq!(r[0]["error"]["code"], -32600);
    assert_eq!(r[0]["error"]["message"], "Permission denied (os error 13)");
    assert!(h.take_commands().is_empty());
    // Inside the workspace the op goes to the runtime with the policy for its second check.
    h.call(conn, 5, "fs/writeFile", write("/w/src/a.rs"));
    match h.take_commands().as_slice() {
        [Command::Fs { sandbox, .. }] => assert!(sandbox.is_some()),
        other => panic!("{other:?}"),
    }
    // A malformed fs sandbox is -32602, as the reference answers it.
    let r = h.call(
        conn,
        6,
        "fs/readFile",
        json!({"path": "file:///w/a", "sandbox": {"permissions": {"type": "disabled"}}}),
    );
    assert_eq!(r[0]["error"]["code"], -32602);
    assert_eq!(
        r[0]["error"]["message"],
        "missing field `windowsSandboxLevel`"
    );
}
