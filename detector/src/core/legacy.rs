//! The state shapes of earlier checkpoint versions, frozen as they were written, and their
//! conversion into today's. A checkpoint holds a postcard encoding, which is not
//! self-describing: a state whose shape changed cannot be read through the new type, so each
//! earlier shape stays here, with its version, for as long as its checkpoints may be read.
//!
//! Never edit a frozen type: add a new one when a shape changes, and bump
//! `CHECKPOINT_VERSION` in `service/checkpoint.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use vigil_schemas::{Anomaly, AnomalyDimension, AnomalyRule, Severity};

use super::amount::AmountBaselines;
use super::breakdown::Breakdown;
use super::counts::MinuteCounts;
use super::dedup::Dedup;
use super::partition::FeedDelay;
use super::rate::RateSeries;
use super::volume::{Active, Holt, Run};

/// Checkpoint versions 1 and 2: the merge stage's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MergeStateV2 {
    pub partition_count: i32,
    pub sources: BTreeMap<i32, SourceV2>,
    pub pending: BTreeMap<i64, PendingV2>,
    pub frontier: Option<i64>,
    pub late: BTreeMap<(i64, i32), i64>,
    pub status_series: Vec<RateSeriesV2>,
    pub auth_series: BTreeMap<String, RateSeriesV2>,
    pub recent_totals: VecDeque<(i64, i64)>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct SourceV2 {
    pub watermark: Option<i64>,
    pub idle: bool,
    pub high_minute: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PendingV2 {
    pub counts: MinuteCounts,
    pub sources: BTreeSet<i32>,
}

/// One minute of a version-2 rate baseline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PointV2 {
    pub minute: i64,
    pub count: i64,
    pub total: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveV2 {
    pub id: String,
    pub first_seen: i64,
    pub sequence: i64,
    pub normal_streak: u32,
    pub severity: Severity,
    pub last: Anomaly,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateSeriesV2 {
    pub rule: AnomalyRule,
    pub dimension: AnomalyDimension,
    pub value: String,
    pub history: VecDeque<PointV2>,
    pub active: Option<ActiveV2>,
}

/// Checkpoint versions 1 and 2: one input partition's state (stage 1), before it learned its
/// feed's delay. The inner types have not changed shape since.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionStateV2 {
    pub partition: i32,
    pub partition_count: i32,
    pub max_event_time: Option<i64>,
    pub watermark: i64,
    pub reported: i64,
    pub open: BTreeMap<i64, MinuteCounts>,
    pub late: BTreeMap<i64, i64>,
    pub dedup: Dedup,
    pub amounts: AmountBaselines,
    pub idle: bool,
}

/// Checkpoint version 3: the merge stage's state before the volume rules (no global volume
/// series). Its sources and pending minutes have version 2's shapes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MergeStateV3 {
    pub partition_count: i32,
    pub sources: BTreeMap<i32, SourceV2>,
    pub pending: BTreeMap<i64, PendingV2>,
    pub frontier: Option<i64>,
    pub late: BTreeMap<(i64, i32), i64>,
    pub status_series: Vec<RateSeries>,
    pub auth_series: BTreeMap<String, RateSeries>,
    pub recent_totals: VecDeque<(i64, i64)>,
}

/// Checkpoint version 3: one input partition's state before the volume rules (no volume
/// series of its categories and merchants).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionStateV3 {
    pub partition: i32,
    pub partition_count: i32,
    pub max_event_time: Option<i64>,
    pub watermark: i64,
    pub reported: i64,
    pub open: BTreeMap<i64, MinuteCounts>,
    pub late: BTreeMap<i64, i64>,
    pub dedup: Dedup,
    pub amounts: AmountBaselines,
    pub idle: bool,
    pub delay: FeedDelay,
    pub breakdown: Breakdown,
}

/// Checkpoint version 4: a volume series before the profile of earlier days (no profile, no
/// dispersions of other forecasters, quarantined minutes with one residual).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeSeriesV4 {
    pub dimension: AnomalyDimension,
    pub value: String,
    pub model: Holt,
    pub quarantine: VecDeque<VPointV4>,
    pub runs: Vec<Run>,
    pub active: Option<Active>,
    pub last: Option<i64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct VPointV4 {
    pub minute: i64,
    pub count: i64,
    pub residual: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeyVolumesV4 {
    pub last: Option<i64>,
    pub categories: BTreeMap<String, VolumeSeriesV4>,
    pub merchants: BTreeMap<String, VolumeSeriesV4>,
}

/// Checkpoint version 4: the merge stage's state before the profile of earlier days: version
/// 3's fields, then the global volume series. (Postcard writes a struct as its fields in order,
/// so version 3's fields nested first encode exactly as they were written, flat.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergeStateV4 {
    pub v3: MergeStateV3,
    pub volume: VolumeSeriesV4,
}

/// Checkpoint version 4: one input partition's state before the profile of earlier days:
/// version 3's fields, then the volume series of its categories and merchants.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionStateV4 {
    pub v3: PartitionStateV3,
    pub volumes: KeyVolumesV4,
}
