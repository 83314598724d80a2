//! The shim's generated export layer must export exactly the names the real driver exports.
//!
//! Reads the committed generated files as text, so it needs neither the shim nor a regen run.
//! (The shim's own unit tests check the by-name address table against the same list.)

use std::collections::BTreeSet;

const DRIVER_EXPORTS: &str = include_str!("../driver-580-exports.txt");
const EXPORTS_RS: &str = include_str!("../../shim/src/generated/exports.rs");
const STUBS_RS: &str = include_str!("../../shim/src/generated/stubs.rs");

fn driver_names() -> Vec<&'static str> {
    DRIVER_EXPORTS.lines().filter(|l| !l.is_empty()).collect()
}

/// Names of the functions declared right after `#[cfg_attr(not(test), no_mangle)]`.
fn exported_names() -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut lines = EXPORTS_RS.lines();
    while let Some(l) = lines.next() {
        if l.trim() != "#[cfg_attr(not(test), no_mangle)]" {
            continue;
        }
        let decl = lines.next().expect("an item after no_mangle");
        let rest = decl
            .strip_prefix("pub unsafe extern \"C\" fn ")
            .unwrap_or_else(|| panic!("not an extern \"C\" fn: {decl}"));
        out.push(&rest[..rest.find('(').expect("a parameter list")]);
    }
    out
}

fn stub_names() -> Vec<&'static str> {
    STUBS_RS
        .lines()
        .filter_map(|l| l.strip_prefix("pub(crate) unsafe fn "))
        .map(|rest| &rest[..rest.find('(').expect("a parameter list")])
        .collect()
}

#[test]
fn driver_list_is_the_580_list() {
    let names = driver_names();
    assert_eq!(names.len(), 707);
    let set: BTreeSet<_> = names.iter().collect();
    assert_eq!(
        set.len(),
        names.len(),
        "duplicates in driver-580-exports.txt"
    );
    assert!(names.iter().all(|n| n.starts_with("cu")));
}

#[test]
fn generated_exports_equal_the_driver_list() {
    let want: BTreeSet<&str> = driver_names().into_iter().collect();
    let exported = exported_names();
    let have: BTreeSet<&str> = exported.iter().copied().collect();
    assert_eq!(have.len(), exported.len(), "a name is exported twice");
    let missing: Vec<_> = want.difference(&have).collect();
    let extra: Vec<_> = have.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    assert_eq!(exported.len(), 707);
}

#[test]
fn exports_without_a_stub_are_the_documented_no_signature_names() {
    let stubs: BTreeSet<&str> = stub_names().into_iter().collect();
    assert!(stubs.iter().all(|s| driver_names().contains(s)));
    let without_stub: BTreeSet<&str> = exported_names()
        .into_iter()
        .filter(|n| !stubs.contains(n))
        .collect();
    // Those are exactly the parameterless exports that answer NOT_SUPPORTED themselves...
    for n in &without_stub {
        let head = format!("pub unsafe extern \"C\" fn {n}() -> CUresult {{\n");
        let at = EXPORTS_RS
            .find(&head)
            .unwrap_or_else(|| panic!("{n}: not parameterless"));
        let end = at + EXPORTS_RS[at..].find("\n}\n").unwrap();
        let body: String = EXPORTS_RS[at + head.len()..end]
            .split_whitespace()
            .collect();
        let guarded = body.starts_with(&format!("crate::entry::guard(\"{n}\","));
        let answer = format!("crate::entry::not_supported(\"{n}\")");
        assert!(
            guarded && body.contains(&answer) && !body.contains("crate::api"),
            "{n}: {body}"
        );
    }
    // ...and the ones README.md lists and explains.
    let readme = include_str!("../README.md");
    let start = readme.find("<!-- begin no-signature list").unwrap();
    let end = readme.find("<!-- end no-signature list").unwrap();
    let documented: BTreeSet<&str> = readme[start..end]
        .lines()
        .filter_map(|l| l.strip_prefix("- `")?.strip_suffix('`'))
        .collect();
    assert_eq!(without_stub, documented);
    assert!(EXPORTS_RS.contains("crate::api::cuMemAlloc_v2(dptr, bytesize)"));
}

#[test]
fn table_lists_every_export_once() {
    let rows: Vec<&str> = EXPORTS_RS
        .lines()
        .filter_map(|l| l.trim().strip_prefix("export!("))
        .map(|l| l.strip_suffix("),").expect("one row per line"))
        .collect();
    let mut sorted = driver_names();
    sorted.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(rows, sorted);
}
