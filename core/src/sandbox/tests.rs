use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::*;
use crate::protocol::FsOp;
use crate::rpc::decode_params;

/// The workspace-write object Codex sends (PROTOCOL.md, Sandbox).
fn workspace_write(network: &str) -> Value {
    let special = |kind: &str| json!({"type": "special", "value": {"kind": kind}});
    let carve = |sub: &str| {
        json!({"path": {"type": "special", "value": {"kind": "project_roots", "subpath": sub}},
               "access": "read", "missing_path_behavior": "skip"})
    };
    json!({"permissions": {"type": "managed", "file_system": {"type": "restricted", "entries": [
        {"path": special("root"), "access": "read"},
        {"path": special("project_roots"), "access": "write"},
        {"path": special("slash_tmp"), "access": "write"},
        {"path": special("tmpdir"), "access": "write"},
        carve(".git"), carve(".agents"), carve(".codex"), carve(".aws"),
    ]}, "network": network},
    "cwd": "file:///w", "workspaceRoots": ["file:///w"], "windowsSandboxLevel": "disabled",
    "windowsSandboxProxySettingsMode": "reconcile", "useLegacyLandlock": false})
}

fn fs(v: &mut Value) -> &mut Value {
    &mut v["permissions"]["file_system"]
}

fn decode(v: &Value) -> Result<SandboxParams, String> {
    let raw = serde_json::value::to_raw_value(v).expect("serializable");
    decode_params::<SandboxParams>(Some(&raw)).map_err(|e| e.message)
}

fn resolve(v: &Value) -> Option<SandboxPolicy> {
    let ctx = ResolveContext {
        cwd: Some(PathBuf::from("/start")),
        tmpdir: Some(PathBuf::from("/var/tmpdir")),
    };
    SandboxPolicy::resolve(&decode(v).expect("decodes"), &ctx).expect("resolves")
}

fn restricted(p: &SandboxPolicy) -> &RestrictedFs {
    match &p.file_system {
        FsRules::Restricted(fs) => fs,
        FsRules::Unrestricted => panic!("expected restricted rules"),
    }
}

fn paths(list: &[&str]) -> Vec<PathBuf> {
    list.iter().map(PathBuf::from).collect()
}

#[test]
fn codex_workspace_write_resolves_roots_and_carve_outs() {
    let p = resolve(&workspace_write("restricted")).expect("a policy");
    assert!(!p.network);
    let fs = restricted(&p);
    assert_eq!(fs.readable, paths(&["/"]));
    let roots: Vec<_> = fs.writable.iter().map(|w| w.root.clone()).collect();
    assert_eq!(roots, paths(&["/tmp", "/var/tmpdir", "/w"]));
    let w = &fs.writable[2];
    assert_eq!(
        w.read_only,
        paths(&["/w/.agents", "/w/.aws", "/w/.codex", "/w/.git"])
    );
    // Carve-outs are protected under every writable root, not only the project's.
    assert!(fs.writable[0]
        .read_only
        .contains(&PathBuf::from("/tmp/.git")));
    assert!(fs.denied.is_empty());
}

#[test]
fn read_only_is_only_the_root_read_entry() {
    let v = json!({"permissions": {"type": "managed", "file_system": {"type": "restricted",
        "entries": [{"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"}]},
        "network": "enabled"}, "windowsSandboxLevel": "disabled"});
    let p = resolve(&v).expect("a policy");
    assert!(p.network);
    let fs = restricted(&p);
    assert_eq!(fs.readable, paths(&["/"]));
    assert!(fs.writable.is_empty());
    assert!(!p.may_write(Path::new("/tmp/x")));
    assert!(p.may_read(Path::new("/etc/passwd")));
}

#[test]
fn write_and_read_decisions_table() {
    let mut v = workspace_write("restricted");
    let entries = v["permissions"]["file_system"]["entries"]
        .as_array_mut()
        .expect("entries");
    entries.push(json!({"path": {"type": "path", "path": "file:///w/secret"}, "access": "deny"}));
    entries.push(json!({"path": {"type": "path", "path": "file:///w/docs"}, "access": "read"}));
    entries.push(json!({"path": {"type": "path", "path": "file:///opt/out"}, "access": "write"}));
    let p = resolve(&v).expect("a policy");
    // (path, may write, may read)
    let table: &[(&str, bool, bool)] = &[
        ("/w/src/main.rs", true, true),
        ("/w", true, true),
        ("/w/.git", false, true),
        ("/w/.git/config", false, true),
        ("/w/.gitignore", true, true),
        ("/w/.codex/x", false, true),
        ("/w/docs/a.md", false, true),
        ("/w/secret", false, false),
        ("/w/secret/key", false, false),
        ("/w/sub/../secret/key", false, false),
        ("/w/sub/../../etc/passwd", false, true),
        ("/etc/passwd", false, true),
        ("/tmp/x", true, true),
        ("/tmp/.git/x", false, true),
        ("/var/tmpdir/y", true, true),
        ("/opt/out/z", true, true),
        ("/opt/other", false, true),
    ];
    for (path, write, read) in table {
        assert_eq!(p.may_write(Path::new(path)), *write, "write {path}");
        assert_eq!(p.may_read(Path::new(path)), *read, "read {path}");
    }
}

#[test]
fn more_specific_entries_win_and_deny_beats_write_on_one_path() {
    let v = json!({"permissions": {"type": "managed", "file_system": {"type": "restricted",
        "entries": [
            {"path": {"type": "path", "path": "file:///a"}, "access": "write"},
            {"path": {"type": "path", "path": "file:///a/b"}, "access": "read"},
            {"path": {"type": "path", "path": "file:///a/b/c"}, "access": "write"},
            {"path": {"type": "path", "path": "file:///d"}, "access": "write"},
            {"path": {"type": "path", "path": "file:///d"}, "access": "none"},
        ]}, "network": "restricted"}, "windowsSandboxLevel": "disabled"});
    let p = resolve(&v).expect("a policy");
    let fs = restricted(&p);
    assert_eq!(fs.denied, paths(&["/d"]));
    assert!(p.may_write(Path::new("/a/x")));
    assert!(!p.may_write(Path::new("/a/b/x")));
    assert!(!p.may_write(Path::new("/d/x")));
    assert!(!p.may_read(Path::new("/d/x")));
    // `/a/b` is a carve-out of `/a`, not a readable root of its own.
    assert!(fs.readable.is_empty());
    assert!(fs.writable[0].read_only.contains(&PathBuf::from("/a/b")));
}

#[test]
fn special_kinds_resolve() {
    let entry =
        |value: Value| json!({"path": {"type": "special", "value": value}, "access": "read"});
    let v = json!({"permissions": {"type": "managed", "file_system": {"type": "restricted",
        "entries": [
            entry(json!({"kind": "minimal"})),
            entry(json!({"kind": "current_working_directory"})),
            entry(json!({"kind": "tmpdir"})),
            entry(json!({"kind": "slash_tmp"})),
            entry(json!({"kind": "unknown", "path": "whatever"})),
            entry(json!({"kind": "project_roots", "subpath": "docs"})),
        ]}, "network": "restricted"},
        "policyContext": {"workspaceRoots": ["file:///p1", "file:///p2"]},
        "windowsSandboxLevel": "disabled"});
    let p = resolve(&v).expect("a policy");
    let fs = restricted(&p);
    for want in [
        "/usr",
        "/etc",
        "/start",
        "/var/tmpdir",
        "/tmp",
        "/p1/docs",
        "/p2/docs",
    ] {
        assert!(fs.readable.contains(&PathBuf::from(want)), "{want}");
    }
    assert!(!p.may_read(Path::new("/home/u/x")));
}

#[test]
fn project_roots_without_workspace_roots_grant_nothing() {
    let mut v = workspace_write("restricted");
    v.as_object_mut().expect("object").remove("workspaceRoots");
    let p = resolve(&v).expect("a policy");
    assert!(!p.may_write(Path::new("/w/x")));
    assert!(p.may_write(Path::new("/tmp/x")));
}

#[test]
fn disabled_external_and_unrestricted() {
    let v = json!({"permissions": {"type": "disabled"}, "windowsSandboxLevel": "disabled"});
    assert_eq!(resolve(&v), None);
    let v = json!({"permissions": {"type": "external", "network": "restricted"},
        "windowsSandboxLevel": "disabled"});
    let p = resolve(&v).expect("a policy");
    assert_eq!(p.file_system, FsRules::Unrestricted);
    assert!(!p.network);
    assert!(p.may_write(Path::new("/anywhere")));
    let v = json!({"permissions": {"type": "managed", "file_system": {"type": "unrestricted"},
        "network": "enabled"}, "windowsSandboxLevel": "mxc"});
    let p = resolve(&v).expect("a policy");
    assert_eq!(p.file_system, FsRules::Unrestricted);
    assert!(p.network);
}

#[test]
fn glob_patterns_fail_closed() {
    let v = json!({"permissions": {"type": "managed", "file_system": {"type": "restricted",
        "entries": [{"path": {"type": "glob_pattern", "pattern": "**/*.env"}, "access": "deny"}]},
        "network": "restricted"}, "windowsSandboxLevel": "disabled"});
    let err = SandboxPolicy::resolve(&decode(&v).expect("decodes"), &ResolveContext::default())
        .expect_err("refused");
    assert_eq!(
        err.to_string(),
        "failed to prepare process sandbox: glob_pattern entries are not supported (pattern `**/*.env`)"
    );
}

#[test]
fn malformed_objects_name_the_field_like_the_reference() {
    let base = workspace_write("restricted");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        f(&mut v);
        decode(&v).expect_err("refused")
    };
    let cases: Vec<(String, &str)> = vec![
        (
            with(&|v| v["permissions"]["type"] = json!("bogus")),
            "unknown variant `bogus`, expected one of `managed`, `disabled`, `external`",
        ),
        (
            with(&|v| {
                v.as_object_mut().expect("object").remove("windowsSandboxLevel");
            }),
            "missing field `windowsSandboxLevel`",
        ),
        (
            with(&|v| v["windowsSandboxLevel"] = json!("bogus")),
            "unknown variant `bogus`, expected one of `disabled`, `restricted-token`, `elevated`, `mxc`",
        ),
        (
            with(&|v| v["permissions"]["network"] = json!("bogus")),
            "unknown variant `bogus`, expected `restricted` or `enabled`",
        ),
        (
            with(&|v| fs(v)["type"] = json!("bogus")),
            "unknown variant `bogus`, expected `restricted` or `unrestricted`",
        ),
        (
            with(&|v| fs(v)["entries"][0]["access"] = json!("bogus")),
            "unknown variant `bogus`, expected one of `read`, `write`, `deny`, `none`",
        ),
        (
            with(&|v| fs(v)["entries"][0]["path"]["type"] = json!("bogus")),
            "unknown variant `bogus`, expected one of `path`, `glob_pattern`, `special`",
        ),
        (
            with(&|v| fs(v)["entries"][0]["path"]["value"]["kind"] = json!("bogus")),
            "unknown variant `bogus`, expected one of `root`, `minimal`, `current_working_directory`, `project_roots`, `tmpdir`, `slash_tmp`, `unknown`",
        ),
        (
            with(&|v| fs(v)["entries"][4]["missing_path_behavior"] = json!("bogus")),
            "unknown variant `bogus`, expected `skip`",
        ),
        (
            with(&|v| v["windowsSandboxProxySettingsMode"] = json!("bogus")),
            "unknown variant `bogus`, expected `reconcile` or `preserve`",
        ),
        (
            with(&|v| v["useLegacyLandlock"] = json!("x")),
            "invalid type: string \"x\", expected a boolean",
        ),
        (
            with(&|v| {
                fs(v).as_object_mut().expect("object").remove("entries");
            }),
            "missing field `entries`",
        ),
        (
            with(&|v| {
                v["permissions"].as_object_mut().expect("object").remove("network");
            }),
            "missing field `network`",
        ),
        (
            with(&|v| {
                v.as_object_mut().expect("object").remove("permissions");
            }),
            "missing field `permissions`",
        ),
        (
            with(&|v| fs(v)["entries"][0]["path"]["value"] = json!({"kind": "unknown"})),
            "missing field `path`",
        ),
    ];
    for (got, want) in cases {
        assert_eq!(got, want);
    }
    // A bare path is not a PathUri.
    assert!(with(&|v| v["cwd"] = json!("/w")).contains("not a file: URI"));
    // Unknown keys are ignored, as the reference does.
    let mut v = base.clone();
    v["bogusKey"] = json!(1);
    assert!(decode(&v).is_ok());
}

#[test]
fn fs_ops_are_checked_lexically() {
    let p = resolve(&workspace_write("restricted")).expect("a policy");
    let write = |path: &str| FsOp::WriteFile {
        path: PathBuf::from(path),
        data: Vec::new(),
        follow_symlinks: true,
    };
    assert!(check_fs_op(&p, &write("/w/a")).is_ok());
    let err = check_fs_op(&p, &write("/etc/x")).expect_err("refused");
    assert_eq!(err.message, "Read-only file system (os error 30)");
    assert_eq!(err.code().code(), -32603);
    assert!(check_fs_op(&p, &write("/w/.git/config")).is_err());
    let copy = FsOp::Copy {
        source: PathBuf::from("/w/a"),
        destination: PathBuf::from("/home/x"),
        recursive: false,
    };
    assert!(check_fs_op(&p, &copy).is_err());
}
