import Metrics

/// The pool's swift-metrics instruments: counters for calls, failures, retries and worker changes,
/// gauges for workers and queue length. Without a metrics backend bootstrapped they cost nothing.
///
/// They are fed from the scheduler's own counts (``PoolState``), in ``Update``s: at once when the
/// workers change, and otherwise when the pool falls idle or a second has passed, so that a call
/// costs no metrics work of its own (and no second acquisition of the pool's lock) while the pool
/// is busy.
struct PoolMetrics: Sendable {
    let calls: Counter
    let failures: Counter
    let retries: Counter
    let workersStarted: Counter
    let workersLost: Counter
    let workers: Gauge
    let queueLength: Gauge

    /// What happened since the last update (the counters' increments) and the gauges' values now.
    struct Update: Sendable, Hashable {
        var calls = 0
        var failures = 0
        var retries = 0
        var workersStarted = 0
        var workersLost = 0
        var workers = 0
        var queueLength = 0
    }

    init(prefix: String, factory: any MetricsFactory) {
        calls = Counter(label: "\(prefix)_calls_total", factory: factory)
        failures = Counter(label: "\(prefix)_call_failures_total", factory: factory)
        retries = Counter(label: "\(prefix)_retries_total", factory: factory)
        workersStarted = Counter(label: "\(prefix)_workers_started_total", factory: factory)
        workersLost = Counter(label: "\(prefix)_workers_lost_total", factory: factory)
        workers = Gauge(label: "\(prefix)_workers", factory: factory)
        queueLength = Gauge(label: "\(prefix)_queue_length", factory: factory)
    }

    /// Hands `update` to the instruments.
    func publish(_ update: Update) {
        for (counter, increment) in [
            (calls, update.calls), (failures, update.failures), (retries, update.retries),
            (workersStarted, update.workersStarted), (workersLost, update.workersLost),
        ] where increment > 0 {
            counter.increment(by: increment)
        }
        workers.record(update.workers)
        queueLength.record(update.queueLength)
    }
}
