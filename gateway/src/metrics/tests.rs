use super::*;

#[test]
fn renders_every_series_by_the_conventions() {
    let m = Metrics::default();
    m.request(
        Handler::Collect,
        Protocol::Http1,
        200,
        Duration::from_micros(900),
    );
    m.request(
        Handler::Collect,
        Protocol::Http3,
        429,
        Duration::from_millis(2),
    );
    m.count(Handler::Static, Protocol::Http2, 418);
    m.rate_limited(RateLimit::SiteBytes);
    m.sink_latency.observe(Duration::from_micros(700));
    m.error(ErrorCode::OriginNotAllowed);
    m.rejected(RejectReason::PropsTooLarge);
    m.accepted(3);
    m.dead_letter_store(4096, 2);
    m.decision(Action::Paywall, Some("meter \"hard\""));
    m.decision(Action::Allow, None);
    m.shadow_pair(Action::Paywall, Action::Offer);
    m.decisions_dropped(2);
    m.config_reload(false);
    let mut scraped = Snapshot::default();
    process::process_series(&mut scraped);
    let text = m.render(scraped, Format::Text);
    for line in [
        "# TYPE pulse_gateway_requests_total counter",
        "pulse_gateway_requests_total{handler=\"collect\",protocol=\"http1\",status=\"200\"} 1",
        "pulse_gateway_requests_total{handler=\"collect\",protocol=\"http3\",status=\"429\"} 1",
        "pulse_gateway_requests_total{handler=\"static\",protocol=\"http2\",status=\"other\"} 1",
        "pulse_gateway_request_duration_seconds_bucket{le=\"0.001\",handler=\"collect\"} 1",
        "pulse_gateway_request_duration_seconds_count{handler=\"collect\"} 2",
        "pulse_gateway_errors_total{reason=\"origin_not_allowed\"} 1",
        "pulse_gateway_errors_total{reason=\"store_unavailable\"} 0",
        "pulse_gateway_events_rejected_total{reason=\"props_too_large\"} 1",
        "pulse_gateway_events_accepted_total 3",
        "pulse_gateway_rate_limited_total{limit=\"site_bytes\"} 1",
        "pulse_gateway_sink_duration_seconds_bucket{le=\"0.0005\"} 0",
        "pulse_gateway_sink_duration_seconds_bucket{le=\"0.00075\"} 1",
        "pulse_gateway_sink_duration_seconds_bucket{le=\"+Inf\"} 1",
        "pulse_gateway_sink_duration_seconds_count 1",
        "# TYPE pulse_gateway_dead_letter_store_bytes gauge",
        "pulse_gateway_dead_letter_store_bytes 4096",
        "pulse_scorer_decisions_total{action=\"paywall\",rule=\"meter \\\"hard\\\"\"} 1",
        "pulse_scorer_decisions_total{action=\"allow\",rule=\"none\"} 1",
        "pulse_scorer_shadow_decisions_total{active=\"paywall\",shadow=\"offer\"} 1",
        "pulse_gateway_decisions_dropped_total 2",
        "pulse_gateway_config_last_reload_successful 0",
        "pulse_gateway_in_flight_requests 0",
        "pulse_build_info{version=\"",
        "# TYPE process_cpu_seconds_total counter",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
    assert_eq!(m.error_count(ErrorCode::OriginNotAllowed), 1);
    assert_eq!(m.requests_by(Protocol::Http3), 1);
    assert_eq!(
        text.matches("pulse_scorer_shadow_decisions_total{").count(),
        1,
        "only pairs seen"
    );
    let open = m.render(Snapshot::default(), Format::OpenMetrics);
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(open.contains("# TYPE pulse_gateway_requests counter"));
}

#[test]
fn in_flight_requests_count_until_answered() {
    let m = Metrics::default();
    let gauge = |m: &Metrics| {
        m.render(Snapshot::default(), Format::Text)
            .lines()
            .find_map(|l| l.strip_prefix("pulse_gateway_in_flight_requests "))
            .map(str::to_owned)
    };
    let a = m.in_flight();
    let b = m.in_flight();
    assert_eq!(gauge(&m).as_deref(), Some("2"));
    drop((a, b));
    assert_eq!(gauge(&m).as_deref(), Some("0"));
}
