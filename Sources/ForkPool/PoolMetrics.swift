import Metrics

/// The pool's swift-metrics instruments: counters for calls, failures, retries and worker changes,
/// gauges for workers and queue length. Without a metrics backend bootstrapped they cost nothing.
struct PoolMetrics: Sendable {
    let calls: Counter
    let failures: Counter
    let retries: Counter
    let workersStarted: Counter
    let workersLost: Counter
    let workers: Gauge
    let queueLength: Gauge

    init(prefix: String) {
        calls = Counter(label: "\(prefix)_calls_total")
        failures = Counter(label: "\(prefix)_call_failures_total")
        retries = Counter(label: "\(prefix)_retries_total")
        workersStarted = Counter(label: "\(prefix)_workers_started_total")
        workersLost = Counter(label: "\(prefix)_workers_lost_total")
        workers = Gauge(label: "\(prefix)_workers")
        queueLength = Gauge(label: "\(prefix)_queue_length")
    }
}
