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

    init(prefix: String, factory: any MetricsFactory) {
        calls = Counter(label: "\(prefix)_calls_total", factory: factory)
        failures = Counter(label: "\(prefix)_call_failures_total", factory: factory)
        retries = Counter(label: "\(prefix)_retries_total", factory: factory)
        workersStarted = Counter(label: "\(prefix)_workers_started_total", factory: factory)
        workersLost = Counter(label: "\(prefix)_workers_lost_total", factory: factory)
        workers = Gauge(label: "\(prefix)_workers", factory: factory)
        queueLength = Gauge(label: "\(prefix)_queue_length", factory: factory)
    }
}
