//! The packet table: the agent's own eBPF object run on crafted frames
//! with `BPF_PROG_TEST_RUN`, each row checked for its TC return code, its
//! redirect target, the one counter it moved and every byte it left; and
//! every `Stat` reached by some row. Needs root; run with `cargo xtask
//! test` (or set `KNET_EBPF_OBJECT`).

mod fixture;
mod from_netdev;
mod from_pod;
mod table;
mod to_netdev;

use std::collections::BTreeSet;

use knet_common::Stat;
use knet_tests::test_run::TestDataplane;

#[test]
fn every_row_and_every_stat() {
    let mut dataplane = TestDataplane::load().unwrap();
    let rows: Vec<_> = [from_pod::rows(), from_netdev::rows(), to_netdev::rows()].into_iter().flatten().collect();

    let mut names = BTreeSet::new();
    let mut produced = BTreeSet::new();
    let mut failures = Vec::new();
    for row in &rows {
        assert!(names.insert((row.program.name(), row.name.as_str())), "two rows named {:?}", row.name);
        dataplane.set_maps(&row.maps).unwrap();
        let (stat, problems) = table::check(&dataplane, row).unwrap();
        produced.extend(stat);
        let label = format!("{}: {}", row.program.name(), row.name);
        let moved = stat.map_or_else(|| "-".to_string(), |s| format!("{s:?}"));
        if problems.is_empty() {
            println!("ok    {label:<90} {moved}");
        } else {
            println!("FAIL  {label:<90} {moved}");
            failures.push(format!("{label}:\n    {}", problems.join("\n    ")));
        }
    }

    let unreached: Vec<Stat> = Stat::ALL.iter().copied().filter(|s| !produced.contains(s)).collect();
    let mut report = String::new();
    if !failures.is_empty() {
        report += &format!("{} of {} rows failed:\n{}\n", failures.len(), rows.len(), failures.join("\n"));
    }
    if !unreached.is_empty() {
        report += &format!("no row produced {unreached:?}\n");
    }
    assert!(report.is_empty(), "{report}");
    println!("{} rows, all {} stats reached", rows.len(), Stat::ALL.len());
}
