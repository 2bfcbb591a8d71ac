use super::*;

#[test]
fn a_root_is_generated_once_and_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let first = load_or_create(&dir, "example.org").unwrap();
    assert_eq!(
        fs::read_to_string(dir.join(CA_CERT)).unwrap(),
        first.cert_pem()
    );
    assert_eq!(
        fs::read_to_string(dir.join(CA_KEY)).unwrap(),
        first.key_pem()
    );
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "no temporary file left: {names:?}");
    assert!(names.iter().any(|n| n == LOCK), "{names:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.join(CA_KEY)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let second = load_or_create(&dir, "other.org").unwrap();
    assert_eq!(
        second.root_der(),
        first.root_der(),
        "the same root, not a new one"
    );
    assert_eq!(second.key_pem(), first.key_pem());
}

#[test]
fn a_lone_file_or_a_bad_root_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = Authority::generate("cluster.local").unwrap();
    fs::write(dir.join(CA_KEY), ca.key_pem()).unwrap();
    let err = load_or_create(dir, "cluster.local")
        .unwrap_err()
        .to_string();
    let expected =
        "ca-key.pem exists but ca-cert.pem is missing; remove ca-key.pem to generate a new root";
    assert_eq!(err, format!("{}: {expected}", dir.display()));
    assert_eq!(fs::read_to_string(dir.join(CA_KEY)).unwrap(), ca.key_pem());
    assert!(!dir.join(CA_CERT).exists());

    fs::remove_file(dir.join(CA_KEY)).unwrap();
    fs::write(dir.join(CA_CERT), ca.cert_pem()).unwrap();
    let err = load_or_create(dir, "cluster.local")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ca-cert.pem exists but ca-key.pem is missing"),
        "{err}"
    );

    fs::write(
        dir.join(CA_KEY),
        Authority::generate("cluster.local").unwrap().key_pem(),
    )
    .unwrap();
    let err = load_or_create(dir, "cluster.local")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(": ca-key.pem does not belong to the certificate in ca-cert.pem"),
        "{err}"
    );
    fs::write(dir.join(CA_CERT), "junk").unwrap();
    let err = load_or_create(dir, "cluster.local")
        .unwrap_err()
        .to_string();
    assert!(err.contains(": ca-cert.pem: no CERTIFICATE block"), "{err}");
}

#[test]
fn a_stale_temporary_key_is_replaced_with_a_private_one() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(CA_KEY);
    fs::write(tmp.path().join("ca-key.pem.tmp"), "left by a crash").unwrap();
    write_atomically(&path, "secret", 0o600).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "secret");
    assert!(!tmp.path().join("ca-key.pem.tmp").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

#[test]
fn processes_starting_together_share_one_root() {
    // `pilotfish serve --ca-dir` and `pilotfish ca issue` may both find the directory empty.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let roots: Vec<Vec<u8>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|_| s.spawn(|| load_or_create(&dir, "example.org").map(|a| a.root_der().to_vec())))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap().unwrap())
            .collect()
    });
    assert!(roots.windows(2).all(|w| w[0] == w[1]), "one root for all");
}
