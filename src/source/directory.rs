//! A directory of manifests, file by file, keeping each file's last good objects.
//!
//! As Kubernetes keeps the old object when an update is rejected: a file that stops parsing
//! keeps all its previous objects, and an object that fails validation keeps its previous
//! version (if it had one). Every such decision leaves a diagnostic that names the file,
//! document, object and field.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::config::ObjectKey;
use crate::config::parse::{self, Located};
use crate::diagnostic::Diagnostic;
use crate::store::Entry;

#[derive(Debug, Default)]
struct FileState {
    /// Hash of the bytes last read, to skip re-parsing unchanged files.
    content_hash: u64,
    objects: Vec<Located>,
    diagnostics: Vec<Diagnostic>,
}

/// The manifests under one directory.
#[derive(Debug)]
pub struct Directory {
    root: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
}

/// Whether a path names a manifest: `.yaml`, `.yml` or `.json`, not hidden (editor swap
/// files, Kubernetes' `..data` ConfigMap links).
pub fn is_manifest(path: &Path) -> bool {
    let hidden = path.components().any(|c| {
        c.as_os_str().to_string_lossy().starts_with('.')
            && c.as_os_str() != "."
            && c.as_os_str() != ".."
    });
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    !hidden && matches!(ext, "yaml" | "yml" | "json")
}

impl Directory {
    pub fn new(root: impl Into<PathBuf>) -> Directory {
        Directory {
            root: root.into(),
            files: BTreeMap::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Lists every manifest under the root, at any depth, in a stable order.
    fn scan(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                let rel = path.strip_prefix(&self.root).unwrap_or(&path);
                if path.is_dir() {
                    if !rel.to_string_lossy().starts_with('.') {
                        dirs.push(path);
                    }
                } else if is_manifest(rel) {
                    out.push(path);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Re-reads the whole directory: new files are loaded, changed ones re-parsed, removed ones
    /// dropped. Returns whether anything changed.
    pub fn rescan(&mut self) -> Result<bool, std::io::Error> {
        let paths = self.scan()?;
        let mut changed = false;
        // `scan` sorts: a binary search keeps a rescan of thousands of files linear-ish.
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| paths.binary_search(p).is_err())
            .cloned()
            .collect();
        for path in gone {
            changed |= self.files.remove(&path).is_some();
        }
        for path in paths {
            changed |= self.reload(&path);
        }
        Ok(changed)
    }

    /// Re-reads one file (or forgets it if it no longer exists). Returns whether its objects or
    /// diagnostics changed.
    pub fn reload(&mut self, path: &Path) -> bool {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        if !is_manifest(rel) {
            return false;
        }
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return self.files.remove(path).is_some();
            }
            Err(e) => {
                let state = self.files.entry(path.to_path_buf()).or_default();
                state.diagnostics = vec![Diagnostic::error(
                    "",
                    format!("{}: cannot read: {e}", path.display()),
                )];
                return true;
            }
        };
        let hash = crate::xds::resource::hash_bytes(&bytes);
        let state = self.files.entry(path.to_path_buf()).or_default();
        if state.content_hash == hash && hash != 0 {
            return false;
        }
        state.content_hash = hash;
        let label = path.display().to_string();
        let text = String::from_utf8_lossy(&bytes);
        match parse::parse_text(&label, &text) {
            Err(syntax) => {
                state.diagnostics = vec![
                    Diagnostic::error(
                        "",
                        format!(
                            "{}; keeping the {} object(s) last read from this file",
                            syntax.message,
                            state.objects.len()
                        ),
                    )
                    .at(Some(&syntax.origin)),
                ];
            }
            Ok(parsed) => {
                let previous: HashMap<ObjectKey, Located> = std::mem::take(&mut state.objects)
                    .into_iter()
                    .map(|l| (l.object.key(), l))
                    .collect();
                let mut diagnostics = parsed.diagnostics;
                let mut objects = Vec::new();
                for located in parsed.objects {
                    let key = located.object.key();
                    let found = crate::validate::validate(&located.object);
                    let rejected = found.iter().any(Diagnostic::is_error);
                    diagnostics.extend(
                        found
                            .into_iter()
                            .map(|d| d.at(Some(&located.origin)).on(&key)),
                    );
                    if !rejected {
                        objects.push(located);
                    } else if let Some(old) = previous.get(&key) {
                        diagnostics.push(
                            Diagnostic::warning(
                                "",
                                "rejected; the previous version keeps being served",
                            )
                            .at(Some(&located.origin))
                            .on(&key),
                        );
                        objects.push(old.clone());
                    }
                }
                state.objects = objects;
                state.diagnostics = diagnostics;
            }
        }
        true
    }

    /// Every object of the directory, first definition winning when two files define the same
    /// object, and the diagnostics of all files (duplicates included).
    pub fn entries(&self) -> (Vec<Entry>, Vec<Diagnostic>) {
        let mut seen: HashMap<ObjectKey, &Located> = HashMap::new();
        let mut entries = Vec::new();
        let mut diagnostics = Vec::new();
        for state in self.files.values() {
            diagnostics.extend(state.diagnostics.iter().cloned());
            for located in &state.objects {
                let key = located.object.key();
                if let Some(first) = seen.get(&key) {
                    diagnostics.push(
                        Diagnostic::error(
                            "metadata.name",
                            format!(
                                "duplicate object; {} defines it first and is served",
                                first.origin
                            ),
                        )
                        .at(Some(&located.origin))
                        .on(&key),
                    );
                    continue;
                }
                seen.insert(key, located);
                entries.push(Entry::from_file(located.clone()));
            }
        }
        (entries, diagnostics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Kind;

    const GW: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n";

    fn names(dir: &Directory) -> Vec<String> {
        dir.entries()
            .0
            .iter()
            .map(|e| e.object.key().to_string())
            .collect()
    }

    #[test]
    fn loads_nested_files_and_skips_hidden_ones() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("a/b")).unwrap();
        std::fs::write(tmp.path().join("a/b/gw.yaml"), GW).unwrap();
        std::fs::write(
            tmp.path().join(".swp.yaml"),
            GW.replace("name: gw", "name: hidden"),
        )
        .unwrap();
        std::fs::write(tmp.path().join("notes.txt"), "not yaml").unwrap();
        let mut dir = Directory::new(tmp.path());
        assert!(dir.rescan().unwrap());
        assert_eq!(names(&dir), vec!["Gateway istio-system/gw"]);
        assert!(!dir.rescan().unwrap(), "unchanged files are not re-parsed");
    }

    #[test]
    fn a_broken_file_keeps_its_last_good_objects() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("gw.yaml");
        std::fs::write(&file, GW).unwrap();
        let mut dir = Directory::new(tmp.path());
        dir.rescan().unwrap();
        std::fs::write(&file, "kind: [broken\n").unwrap();
        assert!(dir.reload(&file));
        let (entries, diags) = dir.entries();
        assert_eq!(entries.len(), 1);
        let [d] = &diags[..] else { panic!("{diags:?}") };
        assert!(d.to_string().contains("gw.yaml"), "{d}");
        assert!(d.message.contains("keeping the 1 object"), "{d}");
        // Deleting the file removes its objects.
        std::fs::remove_file(&file).unwrap();
        assert!(dir.reload(&file));
        assert!(dir.entries().0.is_empty());
    }

    #[test]
    fn duplicates_are_reported_and_the_first_wins() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a.yaml"), GW).unwrap();
        std::fs::write(
            tmp.path().join("b.yaml"),
            GW.replace("number: 80", "number: 81"),
        )
        .unwrap();
        let mut dir = Directory::new(tmp.path());
        dir.rescan().unwrap();
        let (entries, diags) = dir.entries();
        assert_eq!(entries.len(), 1);
        assert!(entries[0].origin.as_ref().unwrap().file.ends_with("a.yaml"));
        assert_eq!(entries[0].object.kind(), Kind::Gateway);
        let [d] = &diags[..] else { panic!("{diags:?}") };
        assert!(d.message.contains("duplicate object"), "{d}");
        assert!(d.origin.as_ref().unwrap().file.ends_with("b.yaml"));
    }

    #[test]
    fn an_invalid_update_keeps_the_previous_version() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("gw.yaml");
        std::fs::write(&file, GW).unwrap();
        let mut dir = Directory::new(tmp.path());
        dir.rescan().unwrap();
        // Port 0 is invalid: the Gateway is rejected and its last good version stays.
        std::fs::write(&file, GW.replace("number: 80", "number: 0")).unwrap();
        assert!(dir.reload(&file));
        let (entries, diags) = dir.entries();
        assert_eq!(entries.len(), 1);
        let spec = entries[0]
            .object
            .spec::<crate::config::istio::Gateway>()
            .unwrap();
        assert_eq!(spec.servers[0].port.number, 80);
        let error = diags
            .iter()
            .find(|d| d.is_error())
            .expect("an error names the field");
        assert!(error.field.contains("servers[0].port"), "{error}");
        assert!(error.to_string().contains("gw.yaml"), "{error}");
        assert!(
            diags
                .iter()
                .any(|d| d.message.contains("previous version keeps being served"))
        );
    }

    #[test]
    fn an_invalid_new_object_is_not_served() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("gw.yaml"),
            GW.replace("number: 80", "number: 70000"),
        )
        .unwrap();
        let mut dir = Directory::new(tmp.path());
        dir.rescan().unwrap();
        let (entries, diags) = dir.entries();
        assert!(entries.is_empty());
        assert!(diags.iter().any(|d| d.is_error()));
    }
}
