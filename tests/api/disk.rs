//! A full disk under the embedded store: publishes answer 503 with `Retry-After`,
//! nothing acknowledged is lost, and posthorn recovers by itself when space returns.
//! On a real (small) tmpfs.

/// The embedded store, whatever store the suite runs on.
mod on_sqlite {
    use std::collections::HashSet;
    use std::path::PathBuf;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use serde_json::json;

    use crate::helpers::Node;
    use crate::receiver::TestReceiver;

    /// A tmpfs of `mib` MiB, unmounted when dropped.
    struct SmallDisk {
        path: PathBuf,
        /// Removed after the unmount.
        _dir: tempfile::TempDir,
    }

    impl SmallDisk {
        fn mount(mib: u32) -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let status = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
                .arg(dir.path())
                .status()
                .expect("mount runs");
            assert!(status.success(), "mount a tmpfs (the suite runs as root)");
            Self {
                path: dir.path().to_owned(),
                _dir: dir,
            }
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }

    #[tokio::test]
    async fn a_full_disk_answers_503_loses_nothing_and_recovers_without_a_restart() {
        let disk = SmallDisk::mount(8);
        // Room that can be given back later.
        let ballast = disk.path.join("ballast");
        std::fs::write(&ballast, vec![0u8; 2 * 1024 * 1024]).expect("ballast");
        let rx = TestReceiver::start().await;
        let url = format!("sqlite://{}", disk.path.join("p.db").display());
        let node = Node::start(&url, &[("POSTHORN_RETRY_SCHEDULE", "200ms")]).await;
        let created = node
            .post(
                "/webhooks/v1/endpoints",
                &json!({"url": rx.url("/full"), "secret": "disk-full-secret"}),
            )
            .await;
        assert_eq!(created.status, 200, "{}", created.text);
        let filler = "x".repeat(200 * 1024);
        let mut accepted = HashSet::new();
        let mut refused = None;
        for i in 0..200 {
            let r = node
                .post(
                    "/webhooks/v1/events",
                    &json!({"eventName": "note.created", "data": {"i": i, "fill": filler}}),
                )
                .await;
            match r.status {
                202 => {
                    accepted.insert(r.body["id"].as_str().expect("id").to_owned());
                }
                503 => {
                    refused = Some(r);
                    break;
                }
                other => panic!("publish {i}: {other} {}\n{}", r.text, node.log()),
            }
        }
        let refused = refused.expect("the disk never filled");
        refused.assert_error(503, "unavailable");
        assert!(
            refused.header("retry-after").parse::<u64>().is_ok(),
            "no Retry-After"
        );
        assert!(
            !accepted.is_empty(),
            "nothing was accepted before the disk filled"
        );
        // Space comes back; the same process takes publishes again.
        std::fs::remove_file(&ballast).expect("ballast removed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = node
                .post(
                    "/webhooks/v1/events",
                    &json!({"eventName": "note.created", "data": {"after": true}}),
                )
                .await;
            if r.status == 202 {
                accepted.insert(r.body["id"].as_str().expect("id").to_owned());
                break;
            }
            assert_eq!(r.status, 503, "{}", r.text);
            assert!(Instant::now() < deadline, "no recovery: {}", node.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Everything acknowledged arrives.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = rx.ids("/full");
            if accepted.is_subset(&got) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} acknowledged events arrived\n{}",
                accepted.intersection(&got).count(),
                accepted.len(),
                node.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
