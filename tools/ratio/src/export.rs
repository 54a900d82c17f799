//! The report as JSON (`--json`).
//!
//! Schema version 3 (the `schema_version` field; a program reading the report checks it):
//! addresses are strings in hexadecimal (`"0x7f0000200000"`: JSON numbers lose precision
//! above 2^53); byte counts are integers; ratios are numbers, or `null` when undefined;
//! `blocks` and `medium_blocks` are always present (empty under `--no-blocks`);
//! `lifetime_classes` names the classes, by index; `counts` holds the header's counts,
//! small, medium and large apart; `medium` sums the medium blocks (`live`: granules). The
//! terms are those of the text report (`text::TERMS`). Version 2 counted medium allocations
//! with the large ones and had no medium blocks; version 1 had no `schema_version`,
//! addresses as numbers and no `blocks` under `--no-blocks`.

use crate::json::Json;
use crate::mix::How;
use crate::report::{self, group, total, Sum};
use crate::Report;
use cohort::class::CLASSES;
use std::collections::BTreeSet;

/// The JSON report's schema version.
pub const SCHEMA_VERSION: u64 = 3;

fn sum_json(s: &Sum) -> Json {
    Json::Obj(vec![
        ("blocks", s.blocks.into()),
        ("capacity", s.capacity.into()),
        ("live", s.live.into()),
        ("block_bytes", s.block_bytes.into()),
        ("usable_bytes", s.usable_bytes.into()),
        ("resident_bytes", s.resident_bytes.into()),
        ("slot_bytes", s.slot_bytes.into()),
        ("requested_bytes", s.requested.into()),
        ("fill", s.fill().into()),
        ("rounding_ratio", s.rounding().into()),
        ("geometry_ratio", s.geometry().into()),
        ("occupancy_ratio", s.occupancy().into()),
    ])
}

fn hex(address: usize) -> Json {
    format!("{address:#x}").into()
}

/// The report as JSON; `blocks` false leaves the per-block list empty.
pub fn to_json(r: &Report, blocks: bool) -> Json {
    let name = |l: usize| Json::from(r.lives.name(l));
    let mix = r.mix.iter().zip(&r.live).map(|(e, &live)| {
        let call = match e.how {
            How::Malloc => "malloc",
            How::Layout { .. } => "layout",
        };
        Json::Obj(vec![
            ("entry", e.to_string().into()),
            ("size", e.size.into()),
            ("align", e.align().into()),
            ("call", call.into()),
            ("life", e.life.into()),
            ("life_name", name(e.life)),
            ("count", e.count.into()),
            ("keep_percent", u64::from(e.keep).into()),
            ("list", e.list.into()),
            ("live", live.into()),
        ])
    });
    let block_row = |row: &report::BlockRow| {
        let b = &row.block;
        Json::Obj(vec![
            ("base", hex(b.base)),
            ("size_class", b.size_class.into()),
            ("stride", b.stride.into()),
            ("life", b.life.into()),
            ("life_name", name(b.life)),
            ("capacity", b.capacity.into()),
            ("live", b.live.into()),
            ("runs", b.runs.into()),
            ("block_bytes", b.block_bytes.into()),
            ("usable_bytes", b.usable_bytes.into()),
            ("resident_bytes", b.resident_bytes.into()),
            ("requested_bytes", row.requested.into()),
            ("geometry_ratio", b.geometry_ratio().into()),
            (
                "occupancy_ratio",
                report::ratio(b.resident_bytes as u64, row.requested).into(),
            ),
        ])
    };
    let block_rows = r.end.blocks.iter().filter(|_| blocks).map(block_row);
    let medium_rows = r.end.medium.iter().filter(|_| blocks).map(block_row);
    let by_class = group(&r.end.blocks, |b| b.size_class)
        .into_iter()
        .map(|(c, s)| {
            Json::Obj(vec![
                ("size_class", c.into()),
                ("stride", (CLASSES[c].stride as u64).into()),
                ("end", sum_json(&s)),
            ])
        });
    let (before, after) = (
        group(&r.build.blocks, |b| b.life),
        group(&r.end.blocks, |b| b.life),
    );
    let lives: BTreeSet<usize> = before.keys().chain(after.keys()).copied().collect();
    let by_life = lives.iter().map(|&l| {
        Json::Obj(vec![
            ("life", l.into()),
            ("life_name", name(l)),
            (
                "build",
                sum_json(&before.get(&l).copied().unwrap_or_default()),
            ),
            ("end", sum_json(&after.get(&l).copied().unwrap_or_default())),
        ])
    });
    let contract = r.contract.iter().map(|row| {
        let worst = &CLASSES[row.worst_class];
        let strides = row
            .classes
            .iter()
            .map(|&c| (CLASSES[c].stride as u64).into());
        Json::Obj(vec![
            ("lo", row.lo.into()),
            ("hi", row.hi.into()),
            ("in_contract", row.in_contract.into()),
            ("contract_ratio", row.limit.into()),
            ("cohort_worst_ratio", row.worst.into()),
            ("worst_size_class", row.worst_class.into()),
            ("worst_stride", (worst.stride as u64).into()),
            ("worst_block_bytes", worst.block_size().into()),
            ("strides", Json::Arr(strides.collect())),
            ("ok", row.ok.into()),
        ])
    });
    let allocated: u64 = r.mix.iter().map(|e| e.count as u64).sum();
    let live: u64 = r.live.iter().map(|&l| l as u64).sum();
    let (build_medium, end_medium) = (r.build.medium_count(), r.end.medium_count());
    let counts = Json::Obj(vec![
        ("build_allocations", allocated.into()),
        (
            "build_small",
            (allocated - build_medium - r.build.large.count).into(),
        ),
        ("build_medium", build_medium.into()),
        ("build_large", r.build.large.count.into()),
        ("end_live", live.into()),
        ("end_small", (live - end_medium - r.end.large.count).into()),
        ("end_medium", end_medium.into()),
        ("end_large", r.end.large.count.into()),
    ]);
    let large = &r.end.large;
    Json::Obj(vec![
        ("schema_version", SCHEMA_VERSION.into()),
        ("tool_version", env!("CARGO_PKG_VERSION").into()),
        (
            "lifetime_classes",
            Json::Arr(r.lives.names().iter().map(|n| n.as_str().into()).collect()),
        ),
        ("counts", counts),
        ("region", r.region.json()),
        ("mix", Json::Arr(mix.collect())),
        ("blocks", Json::Arr(block_rows.collect())),
        ("medium_blocks", Json::Arr(medium_rows.collect())),
        ("by_size_class", Json::Arr(by_class.collect())),
        ("by_lifetime_class", Json::Arr(by_life.collect())),
        ("total_build", sum_json(&total(&r.build.blocks))),
        ("total", sum_json(&total(&r.end.blocks))),
        ("medium", sum_json(&total(&r.end.medium))),
        (
            "large",
            Json::Obj(vec![
                ("count", large.count.into()),
                ("requested_bytes", large.requested.into()),
                ("mapped_bytes", large.mapped.into()),
            ]),
        ),
        ("ratio_table", Json::Arr(contract.collect())),
        (
            "problems",
            Json::Arr(r.problems.iter().map(|p| p.as_str().into()).collect()),
        ),
    ])
}
