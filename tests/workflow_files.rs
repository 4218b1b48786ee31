//! Every kind of workflow file through `load_any`: API JSON, UI JSON, and PNG and WebP images
//! built here the way ComfyUI writes them (PIL's `tEXt` chunks; an `EXIF` chunk whose first IFD
//! holds `prompt:{...}` and `workflow:{...}`).

use std::fs;
use std::path::Path;

use comfy_proxy::workflow::image::{self, ImageError};
use comfy_proxy::workflow::{
    FileKind, LoadError, ObjectInfo, Workflow, detect, load_any, ui, validate,
};
use serde_json::Value;

fn fixture(name: &str) -> Vec<u8> {
    fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name),
    )
    .unwrap()
}

fn object_info() -> ObjectInfo {
    ObjectInfo::from_json(&String::from_utf8(fixture("object_info.json")).unwrap()).unwrap()
}

fn ui_doc() -> String {
    String::from_utf8(fixture("ui/flux_features.json")).unwrap()
}

fn expected() -> Workflow {
    Workflow::from_json(&String::from_utf8(fixture("ui/flux_features.api.json")).unwrap()).unwrap()
}

const API: &str = r#"{"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}, "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}"#;

/// A PNG chunk: length, type, data, and a CRC (not checked by the reader, so zero here).
fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&[0; 4]);
    out
}

fn text(key: &str, value: &str) -> Vec<u8> {
    chunk(b"tEXt", &[key.as_bytes(), b"\0", value.as_bytes()].concat())
}

fn itxt(key: &str, compressed: bool, value: &str) -> Vec<u8> {
    let head = [key.as_bytes(), b"\0", &[u8::from(compressed), 0], b"en\0\0"].concat();
    chunk(b"iTXt", &[head.as_slice(), value.as_bytes()].concat())
}

fn png(chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0]));
    for c in chunks {
        out.extend_from_slice(c);
    }
    out.extend(chunk(b"IDAT", &[0; 12]));
    out.extend(chunk(b"IEND", &[]));
    out
}

/// A TIFF structure (as PIL's `Exif.tobytes`) with one ASCII entry per string.
fn exif(strings: &[(u16, &str)], little: bool, prefix: bool) -> Vec<u8> {
    let u16b = |v: u16| {
        if little {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        }
    };
    let u32b = |v: u32| {
        if little {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        }
    };
    let mut tiff = if little {
        b"II".to_vec()
    } else {
        b"MM".to_vec()
    };
    tiff.extend(u16b(42));
    tiff.extend(u32b(8));
    tiff.extend(u16b(strings.len() as u16));
    let mut data_at = 8 + 2 + 12 * strings.len() + 4;
    let mut data = Vec::new();
    for (tag, s) in strings {
        let bytes = [s.as_bytes(), b"\0"].concat();
        tiff.extend(u16b(*tag));
        tiff.extend(u16b(2));
        tiff.extend(u32b(bytes.len() as u32));
        tiff.extend(u32b(data_at as u32));
        data_at += bytes.len();
        data.extend(bytes);
    }
    tiff.extend(u32b(0));
    tiff.extend(data);
    if prefix {
        [b"Exif\0\0".as_slice(), &tiff].concat()
    } else {
        tiff
    }
}

fn webp(chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut body = b"WEBP".to_vec();
    for (kind, data) in chunks {
        body.extend_from_slice(*kind);
        body.extend((data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        if data.len() % 2 == 1 {
            body.push(0);
        }
    }
    let mut out = b"RIFF".to_vec();
    out.extend((body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

#[test]
fn api_and_ui_json() {
    let info = object_info();
    let api = load_any(API.as_bytes(), None).unwrap();
    assert_eq!((api.kind, api.converted), (FileKind::ApiJson, false));
    assert_eq!(api.workflow, Workflow::from_json(API).unwrap());

    let doc = ui_doc();
    assert_eq!(detect(doc.as_bytes()), Some(FileKind::UiJson));
    assert_eq!(
        load_any(doc.as_bytes(), None).unwrap_err(),
        LoadError::NeedsObjectInfo {
            kind: FileKind::UiJson
        }
    );
    // A byte-order mark and leading white space are fine.
    let bom = [b"\xEF\xBB\xBF\n ".as_slice(), doc.as_bytes()].concat();
    let loaded = load_any(&bom, Some(&info)).unwrap();
    assert_eq!((loaded.kind, loaded.converted), (FileKind::UiJson, true));
    assert_eq!(loaded.workflow.to_json(), expected().to_json());

    assert_eq!(
        load_any(b"GIF89a", None).unwrap_err(),
        LoadError::Unrecognized
    );
    assert!(matches!(
        load_any(b"{not json", None),
        Err(LoadError::Json { .. })
    ));
    assert!(matches!(
        load_any(b"{\"1\": 5}", None),
        Err(LoadError::Api(_))
    ));
    let err = load_any(br#"{"nodes": [{"id": 1, "type": "Nope"}]}"#, Some(&info)).unwrap_err();
    assert!(
        matches!(err, LoadError::Ui(ui::UiError::UnknownClass { .. })),
        "{err}"
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn png_prefers_the_prompt_and_else_converts_the_workflow() {
    let info = object_info();
    let doc = ui_doc();
    let both = png(&[text("prompt", API), text("workflow", &doc)]);
    assert_eq!(detect(&both), Some(FileKind::Png));
    let loaded = load_any(&both, None).unwrap();
    assert_eq!((loaded.kind, loaded.converted), (FileKind::Png, false));
    assert_eq!(loaded.workflow, Workflow::from_json(API).unwrap());

    let only_ui = png(&[itxt("workflow", false, &doc)]);
    assert_eq!(
        load_any(&only_ui, None).unwrap_err(),
        LoadError::NeedsObjectInfo {
            kind: FileKind::Png
        }
    );
    let loaded = load_any(&only_ui, Some(&info)).unwrap();
    assert!(loaded.converted);
    assert_eq!(loaded.workflow.to_json(), expected().to_json());
    assert!(validate(&loaded.workflow, &info).is_valid());

    // A damaged prompt: the workflow is used instead.
    let bad_prompt = png(&[text("prompt", "{\"1\": 7}"), text("workflow", &doc)]);
    assert!(load_any(&bad_prompt, Some(&info)).unwrap().converted);

    assert_eq!(
        load_any(&png(&[text("Software", "x")]), None).unwrap_err(),
        LoadError::NoWorkflowInImage {
            kind: FileKind::Png
        }
    );
    assert_eq!(
        load_any(&png(&[itxt("prompt", true, "zlib")]), None).unwrap_err(),
        LoadError::Image(ImageError::CompressedText {
            key: "prompt".into()
        })
    );
    // Cut short inside a chunk: an error, not a panic.
    for cut in [20, 40, both.len() - 30] {
        let r = load_any(&both[..cut], None);
        assert!(
            matches!(r, Err(LoadError::Image(ImageError::Truncated { .. }))),
            "{cut}: {r:?}"
        );
    }
    let meta = image::read_metadata(&both).unwrap();
    assert_eq!(meta.prompt.as_deref(), Some(API));
    assert_eq!(meta.workflow.as_deref(), Some(doc.as_str()));
}

#[test]
fn webp_exif_prompt_and_workflow() {
    let info = object_info();
    let doc = ui_doc();
    let prompt = format!("prompt:{API}");
    let workflow = format!("workflow:{doc}");
    for (little, prefix) in [(true, true), (false, false), (true, false)] {
        let file = webp(&[
            (b"VP8X", vec![0; 10]),
            (
                b"EXIF",
                exif(&[(0x0110, &prompt), (0x010F, &workflow)], little, prefix),
            ),
            (b"ANIM", vec![0; 6]),
        ]);
        assert_eq!(detect(&file), Some(FileKind::Webp));
        let loaded = load_any(&file, None).unwrap();
        assert_eq!((loaded.kind, loaded.converted), (FileKind::Webp, false));
        assert_eq!(loaded.workflow, Workflow::from_json(API).unwrap());
    }
    let only_ui = webp(&[(b"EXIF", exif(&[(0x010F, &workflow)], true, true))]);
    let loaded = load_any(&only_ui, Some(&info)).unwrap();
    assert!(loaded.converted);
    assert_eq!(loaded.workflow.to_json(), expected().to_json());

    let no_exif = webp(&[(b"VP8L", vec![0; 5])]);
    assert_eq!(
        load_any(&no_exif, None).unwrap_err(),
        LoadError::NoWorkflowInImage {
            kind: FileKind::Webp
        }
    );
    let bad = webp(&[(b"EXIF", b"XX\0\0junk".to_vec())]);
    assert!(matches!(
        load_any(&bad, None),
        Err(LoadError::Image(ImageError::BadExif { .. }))
    ));
    // Offsets pointing outside the chunk, and a file cut short: errors, never panics.
    let mut wild = exif(&[(0x0110, &prompt)], true, false);
    wild[18..22].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(load_any(&webp(&[(b"EXIF", wild)]), None).is_err());
    let whole = webp(&[(b"EXIF", exif(&[(0x0110, &prompt)], true, true))]);
    for cut in 12..whole.len() {
        let _ = load_any(&whole[..cut], None);
    }
    assert!(load_any(&whole[..40], None).is_err());
}

#[test]
fn local_images_saved_by_a_real_comfyui() {
    // Opt-in: COMFY_SAVED_IMAGES=a.png,b.webp
    let Ok(list) = std::env::var("COMFY_SAVED_IMAGES") else {
        eprintln!("skipped: set COMFY_SAVED_IMAGES=FILE,FILE to read images a ComfyUI saved");
        return;
    };
    for path in list.split(',') {
        let bytes = fs::read(path).unwrap();
        let meta = image::read_metadata(&bytes).unwrap();
        let prompt: Value = serde_json::from_str(meta.prompt.as_deref().unwrap()).unwrap();
        let loaded = load_any(&bytes, Some(&object_info())).unwrap();
        assert_eq!(loaded.workflow.to_json(), prompt, "{path}");
        if let Some(workflow) = meta.workflow {
            let converted = ui::to_api(&serde_json::from_str(&workflow).unwrap(), &object_info());
            let converted = converted.unwrap().to_json();
            // Titles aside: whoever posted the prompt may have given its own.
            let untitled = |mut g: Value| {
                for node in g.as_object_mut().into_iter().flat_map(|g| g.values_mut()) {
                    node.as_object_mut().map(|n| n.remove("_meta"));
                }
                g
            };
            eprintln!(
                "{path}: prompt of {} nodes; its workflow converts to the same graph: {}",
                loaded.workflow.len(),
                untitled(converted) == untitled(prompt.clone())
            );
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Any bytes, and any damage to a valid PNG or WebP: an answer or a typed error, never a
    /// panic.
    #[test]
    fn load_any_never_panics(
        tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        at in 0usize..2000,
        byte in proptest::prelude::any::<u8>(),
    ) {
        static INFO: std::sync::OnceLock<ObjectInfo> = std::sync::OnceLock::new();
        let info = INFO.get_or_init(object_info);
        for head in [&b""[..], b"\x89PNG\r\n\x1a\n", b"RIFF\0\0\0\0WEBP", b"{"] {
            let _ = load_any(&[head, tail.as_slice()].concat(), Some(info));
        }
        let doc = ui_doc();
        let prompt = format!("prompt:{API}");
        let images = [
            png(&[text("prompt", API), itxt("workflow", false, &doc)]),
            webp(&[(b"EXIF", exif(&[(0x0110, &prompt)], true, true))]),
        ];
        for mut file in images {
            let i = at % file.len();
            file[i] = byte;
            let _ = load_any(&file, Some(info));
        }
    }
}
