//! UI-format workflows (as the ComfyUI frontend saves them) converted to the API format against
//! a real server's `object_info`: each fixture in `fixtures/ui/` must convert to the API graph
//! beside it (`NAME.api.json`) and that graph must pass the validator.

use std::fs;
use std::path::{Path, PathBuf};

use comfy_proxy::workflow::{ObjectInfo, Workflow, ui, validate};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn object_info() -> ObjectInfo {
    let text = fs::read_to_string(fixture("object_info.json")).unwrap();
    ObjectInfo::from_json(&text).unwrap()
}

fn json(name: &str) -> Value {
    serde_json::from_str(&fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

/// Converts `ui/NAME.json`, checks it equals `ui/NAME.api.json` and validates.
fn check(name: &str) -> Workflow {
    let info = object_info();
    let wf = ui::to_api(&json(&format!("ui/{name}.json")), &info)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let expected = json(&format!("ui/{name}.api.json"));
    assert_eq!(
        wf.to_json(),
        expected,
        "{name}: got {}",
        serde_json::to_string_pretty(&wf.to_json()).unwrap()
    );
    let report = validate(&wf, &info);
    assert!(report.is_valid(), "{name}: {report}");
    wf
}

#[test]
fn widgets_links_reroutes_primitives_muted_bypassed_notes() {
    let wf = check("flux_features");
    // The note, the reroute, the primitive, the muted and the bypassed nodes are gone.
    for gone in ["5", "10", "12", "14", "15", "18", "19"] {
        assert!(!wf.contains(gone), "{gone}");
    }
}
