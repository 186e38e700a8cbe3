//! Reports people look at: the HTML report of a run, rendered by a real browser
//! (headless Chromium), and its JUnit file checked against docs/junit.xsd.

use std::path::Path;
use std::process::Command;

use evapi_tests::{binary, require_tool};

fn chromium(dir: &Path, args: &[&str], page: &Path) -> std::process::Output {
    evapi_tests::succeed(
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .args(args)
            .arg(format!("file://{}", page.display())),
    )
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let be = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    (be(16), be(20))
}

#[test]
#[ignore = "needs chromium and xmllint (apt-get install chromium libxml2-utils); .ci/run runs it"]
fn the_html_report_renders_its_charts_in_a_browser_and_the_junit_file_is_valid() {
    require_tool("chromium", "chromium");
    require_tool("xmllint", "libxml2-utils");
    let dir = std::env::temp_dir().join(format!("evapi-reports-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (html, junit) = (dir.join("demo.html"), dir.join("demo.xml"));
    evapi_tests::succeed(
        Command::new(binary("evapi-sim"))
            .args(["demo", "--bind", "127.0.0.1:0", "--html"])
            .arg(&html)
            .arg("--junit")
            .arg(&junit),
    );

    // The browser's view of the page: the verdict and four charts, each an SVG with
    // its marks (bars are rects, curves polylines).
    let dom = chromium(&dir, &["--dump-dom"], &html);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("PASSED: 10000 requests"), "{dom}");
    for id in [
        "latency-histogram",
        "latency-percentiles",
        "rate",
        "per-app",
    ] {
        let at = dom
            .find(&format!("<figure id=\"{id}\">"))
            .unwrap_or_else(|| panic!("{id}"));
        let figure = &dom[at..at + dom[at..].find("</figure>").unwrap()];
        assert!(figure.contains("<svg"), "{id} has a chart");
        assert!(
            figure.contains("<rect") || figure.contains("<polyline"),
            "{id} has marks"
        );
    }
    assert!(!dom.contains("chart unavailable"));
    // The rate says what it counts: the demo's answers, by code.
    let rate = &dom[dom.find("<figure id=\"rate\">").unwrap()..];
    assert!(rate[..rate.find("</figure>").unwrap()].contains("200 answered"));
    // Evidence: when, by which build, where and how.
    let at = dom
        .find("<section id=\"provenance\">")
        .expect("the provenance section");
    let made = &dom[at..at + dom[at..].find("</section>").unwrap()];
    for want in [
        "How this report was made",
        "<td>date</td><td>20",
        concat!(
            "<td>version</td><td>evapi-sim ",
            env!("CARGO_PKG_VERSION"),
            " ("
        ),
        "<td>host</td>",
        "<td>command</td>",
        " demo --bind 127.0.0.1:0 --html ",
    ] {
        assert!(made.contains(want), "{want:?} in {made}");
    }

    // And a screenshot of it, at the size asked for.
    let shot = dir.join("demo.png");
    chromium(
        &dir,
        &[
            "--window-size=900,2000",
            &format!("--screenshot={}", shot.display()),
        ],
        &html,
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(png_size(&png), (900, 2000));
    assert!(
        png.len() > 20_000,
        "a page with charts, not a blank one: {} bytes",
        png.len()
    );

    evapi_tests::check_junit(&[&junit]);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("tests=\"3\" skipped=\"0\" failures=\"0\""),
        "{xml}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `evapi-sim sip --html --junit` writes both on exit: after a sipp burst answered by
/// the responder, the page has the latency charts and the health checks all pass.
#[test]
#[ignore = "needs sipp and xmllint (apt-get install sip-tester libxml2-utils); .ci/run runs it"]
fn the_sip_front_writes_its_reports_on_exit() {
    evapi_tests::sipp::require();
    require_tool("xmllint", "libxml2-utils");
    let dir = std::env::temp_dir().join(format!("evapi-sip-reports-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (html, junit) = (dir.join("sip.html"), dir.join("sip.xml"));
    let (html_arg, junit_arg) = (html.display().to_string(), junit.display().to_string());
    let mut node = evapi_tests::sipp::SimNode::start(&["--html", &html_arg, "--junit", &junit_arg]);
    let mut respond = Command::new(binary("evapi-client"));
    respond.args(["--addr", &node.evapi, "respond", "--code", "486"]);
    let _app = evapi_tests::Running::spawn(respond);
    node.wait_for_app();
    let out = evapi_tests::sipp::burst_486(&node.sip, 200, 200);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let counters = node.finish();
    assert!(
        counters.contains("final 486                     200"),
        "{counters}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("PASSED: 400 requests, 200 final responses, 200 answered by apps"),
        "{page}"
    );
    for id in [
        "latency-histogram",
        "latency-percentiles",
        "rate",
        "per-app",
    ] {
        assert!(
            page.contains(&format!("<figure id=\"{id}\"><figcaption>")),
            "{id}"
        );
    }
    evapi_tests::check_junit(&[&junit]);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("tests=\"6\" skipped=\"0\" failures=\"0\""),
        "{xml}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
