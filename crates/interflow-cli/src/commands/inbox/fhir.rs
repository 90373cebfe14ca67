//! The FHIR R4 form of an inbox export: one `Bundle` of type `collection` whose entries are
//! `Observation`s a hospital system can import as they are. JSON is built with `serde_json`
//! (no FHIR model crate); the shape is checked by an independent FHIR library in the CLI's
//! end-to-end tests (Python `fhir.resources`).
//!
//! Codes, and where they come from:
//!
//! - Pregnancy status follows the HL7 International Patient Summary (IPS) profile
//!   `Observation-pregnancy-status-uv-ips`: `code` LOINC 82810-3 "Pregnancy status", value
//!   from the value set `pregnancy-status-uv-ips` (LOINC answers LA15173-0 "Pregnant",
//!   LA26683-5 "Not pregnant"), each given with its SNOMED CT equivalent from the same
//!   concepts as the US Core / HL7 AU pregnancy status value sets (77386006 "Pregnant",
//!   60001007 "Not pregnant"). Source: <https://hl7.org/fhir/uv/ips/ValueSet-pregnancy-status-uv-ips.html>,
//!   <https://hl7.org/fhir/us/core/STU6/ValueSet-us-core-pregnancy-status.html>.
//! - The expected delivery date is its own Observation, LOINC 11778-8 "Delivery date
//!   Estimated", linked from the status by `hasMember`, as IPS does
//!   (`Observation-pregnancy-edd-uv-ips`, value set `edd-method-uv-ips`). Its value is the
//!   month (`valueDateTime` `YYYY-MM`, a partial dateTime FHIR allows).
//! - "Delivered" and "pregnancy ended" are "Not pregnant" at the observed date (the IPS value
//!   set has no other answer); the event and its date go in `note`. IPS records outcomes in
//!   separate `Observation-pregnancy-outcome-uv-ips` counts, which a status record does not
//!   give.
//! - Contraception: `code` LOINC 8659-5 "Birth control method - Reported" (LOINC part
//!   "Birth control method", scale Nom; 86649-1 is the same question "at intake" used by the
//!   US family planning annual report, which does not fit a status record). Values: the LOINC
//!   answers of the family planning method answer list (as expanded by tx.fhir.org, LOINC
//!   2.81, in e.g. <https://build.fhir.org/ig/jembi/ethiopia-hiv/ValueSet-family-planning-method-value-set.html>)
//!   and SNOMED CT codes where the WHO SMART Family Planning guide
//!   (<https://build.fhir.org/ig/WorldHealthOrganization/smart-fp/>, value sets
//!   `procedurebirthcontrolmethods-values`, `careplanbirthcontrolmethods-values`) names one
//!   for the method; see [`method_codes`] for each method and where no exact code exists.
//!
//! Subjects are pseudonyms, never identities: `subject` is a Reference by `identifier` whose
//! `system` names the agreement (`urn:interflow:agreement:<id>`, the ref's key scope) and whose
//! `value` is the subject ref in hex.

use std::collections::HashSet;

use interflow_core::pb;
use interflow_core::pb::inbox_item::Payload;
use serde_json::{Value, json};

use crate::human;

const LOINC: &str = "http://loinc.org";
const SNOMED: &str = "http://snomed.info/sct";
/// `Observation.identifier.system` of a record id.
pub const RECORD_ID_SYSTEM: &str = "urn:interflow:record-id";
/// `Observation.performer` identifier system for a service point code.
pub const SERVICE_POINT_SYSTEM: &str = "urn:interflow:service-point";

/// A code: system, code, display.
type Code = (&'static str, &'static str, &'static str);

const PREGNANCY_STATUS: Code = (LOINC, "82810-3", "Pregnancy status");
const DELIVERY_DATE_ESTIMATED: Code = (LOINC, "11778-8", "Delivery date Estimated");
const BIRTH_CONTROL_METHOD: Code = (LOINC, "8659-5", "Birth control method - Reported");

const PREGNANT: [Code; 2] = [
    (LOINC, "LA15173-0", "Pregnant"),
    (SNOMED, "77386006", "Pregnant"),
];
const NOT_PREGNANT: [Code; 2] = [
    (LOINC, "LA26683-5", "Not pregnant"),
    (SNOMED, "60001007", "Not pregnant"),
];

/// The value codings of a contraceptive method, and its text.
///
/// - `iud`: LOINC LA6527-1 "Intrauterine device" (copper and hormonal alike; SNOMED CT splits
///   them, and the record does not say which, so no SNOMED code is given).
/// - `implant`: LOINC LA27901-0 "Implantable rod".
/// - `injectable`: LOINC LA27907-7 "Injectables" (the SNOMED codes in the WHO guide name one
///   product each, e.g. 709457002 DMPA-SC, so none is given).
/// - `oral_pill`: LOINC LA27908-5 "Combined oral contraceptive pills": the closest answer; the
///   record does not tell combined pills from progestogen-only ones (no exact code).
/// - `condom`: LOINC LA14543-5 "Condoms".
/// - `sterilization`: SNOMED CT 275572005 "Female sterilization" as the WHO guide's procedure
///   value set gives it (LOINC has LA14534-4 "Vasectomy" for men only; the record does not
///   say whose sterilization, so the female code is the best documented one).
/// - `none`: SNOMED CT 169450001, the WHO guide's code for "no method".
/// - `other`: no code exists; text only.
pub fn method_codes(method: i32) -> (Vec<Code>, &'static str) {
    use pb::ContraceptiveMethod as M;
    match M::try_from(method).unwrap_or(M::Unspecified) {
        M::Iud => (
            vec![(LOINC, "LA6527-1", "Intrauterine device")],
            "intrauterine device",
        ),
        M::Implant => (vec![(LOINC, "LA27901-0", "Implantable rod")], "implant"),
        M::Injectable => (vec![(LOINC, "LA27907-7", "Injectables")], "injectable"),
        M::OralPill => (
            vec![(LOINC, "LA27908-5", "Combined oral contraceptive pills")],
            "oral contraceptive pill",
        ),
        M::Condom => (vec![(LOINC, "LA14543-5", "Condoms")], "condom"),
        M::Sterilization => (
            vec![(SNOMED, "275572005", "Female sterilization")],
            "sterilization",
        ),
        M::None => (vec![(SNOMED, "169450001", "No method")], "no contraception"),
        M::Other | M::Unspecified => (vec![], "other method"),
    }
}

fn coding(c: &Code) -> Value {
    json!({ "system": c.0, "code": c.1, "display": c.2 })
}

fn concept(codes: &[Code], text: &str) -> Value {
    let mut v = json!({ "text": text });
    if !codes.is_empty() {
        v["coding"] = Value::Array(codes.iter().map(coding).collect());
    }
    v
}

/// A `urn:uuid:` for an entry, derived from bytes (a record id), so exports are repeatable.
fn urn_uuid(bytes: &[u8], variant: u8) -> String {
    let mut b = [0u8; 16];
    for (i, x) in bytes.iter().take(16).enumerate() {
        b[i] = *x;
    }
    b[15] ^= variant;
    // Version 8 (custom) and the RFC 9562 variant bits.
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn subject(agreement_id: &str, subject_ref: &[u8]) -> Value {
    json!({
        "identifier": {
            "system": format!("urn:interflow:agreement:{agreement_id}"),
            "value": hex::encode(subject_ref),
        }
    })
}

/// The common part of every Observation of an item.
fn observation(it: &pb::InboxItem, status: &str, code: &Code, id_suffix: &str) -> Value {
    let record_id = hex::encode(&it.record_id);
    // `Observation.id` is at most 64 characters: the record id is exactly 64 hex digits.
    let id = if id_suffix.is_empty() {
        record_id.clone()
    } else {
        format!("{id_suffix}-{}", &record_id[..64 - id_suffix.len() - 1])
    };
    let mut o = json!({
        "resourceType": "Observation",
        "id": id,
        "identifier": [{
            "system": RECORD_ID_SYSTEM,
            "value": if id_suffix.is_empty() { record_id } else { format!("{record_id}/{id_suffix}") },
        }],
        "status": status,
        "code": concept(std::slice::from_ref(code), code.2),
        "subject": subject(&it.agreement_id, &it.subject_ref),
    });
    if let Some(d) = human::date(it.observed_on.as_ref()) {
        o["effectiveDateTime"] = json!(d);
    }
    if it.issued_at_ms != 0 {
        o["issued"] = json!(human::instant(it.issued_at_ms));
    }
    o
}

fn performer(service_point: &str) -> Value {
    json!([{ "identifier": { "system": SERVICE_POINT_SYSTEM, "value": service_point } }])
}

fn entry(full_url: String, resource: Value) -> Value {
    json!({ "fullUrl": full_url, "resource": resource })
}

/// The Bundle of `items` (in arrival order). `withdrawn` holds the ids of records a
/// retraction withdrew; `now_ms` is the Bundle's timestamp.
pub fn bundle(items: &[pb::InboxItem], withdrawn: &HashSet<Vec<u8>>, now_ms: i64) -> Value {
    let exported: HashSet<&[u8]> = items
        .iter()
        .filter(|i| !i.erased)
        .map(|i| i.record_id.as_slice())
        .collect();
    let mut entries = Vec::new();
    for it in items {
        let status = if withdrawn.contains(&it.record_id) {
            "entered-in-error"
        } else {
            "final"
        };
        match &it.payload {
            // Tombstones (records erased at the end of their retention) are not exported: their
            // payload and subject ref are gone, and an Observation without either would either
            // be invalid or bring back to the hospital's systems data the agreement said to
            // forget.
            None => {}
            // A residence notice is not a clinical observation: the FHIR export leaves it to
            // the worklist (`inbox --kind residence`).
            Some(Payload::Residence(_)) => {}
            Some(Payload::Pregnancy(p)) => {
                let mut o = observation(it, status, &PREGNANCY_STATUS, "");
                let state = pb::PregnancyState::try_from(p.state).unwrap_or_default();
                let (codes, text): (&[Code], &str) = match state {
                    pb::PregnancyState::Pregnant => (&PREGNANT, "pregnant"),
                    pb::PregnancyState::Delivered => (&NOT_PREGNANT, "not pregnant (delivered)"),
                    pb::PregnancyState::PregnancyEnded => {
                        (&NOT_PREGNANT, "not pregnant (pregnancy ended)")
                    }
                    _ => (&NOT_PREGNANT, "not pregnant"),
                };
                o["valueCodeableConcept"] = concept(codes, text);
                if !p.service_point.is_empty() {
                    o["performer"] = performer(&p.service_point);
                }
                let mut notes = Vec::new();
                if let Some(d) = human::date(p.event_date.as_ref()) {
                    let what = match state {
                        pb::PregnancyState::Delivered => "delivered",
                        _ => "pregnancy ended",
                    };
                    notes.push(json!({ "text": format!("{what} on {d}") }));
                }
                if p.prenatal_visits > 0 {
                    notes.push(json!({ "text": format!("{} prenatal visits", p.prenatal_visits) }));
                }
                if !notes.is_empty() {
                    o["note"] = Value::Array(notes);
                }
                let edd = human::month(p.expected_delivery.as_ref()).map(|m| {
                    let mut e = observation(it, status, &DELIVERY_DATE_ESTIMATED, "edd");
                    e["valueDateTime"] = json!(m);
                    e
                });
                if let Some(e) = edd {
                    let url = urn_uuid(&it.record_id, 1);
                    o["hasMember"] = json!([{ "reference": url }]);
                    entries.push(entry(urn_uuid(&it.record_id, 0), o));
                    entries.push(entry(url, e));
                } else {
                    entries.push(entry(urn_uuid(&it.record_id, 0), o));
                }
            }
            Some(Payload::Contraception(c)) => {
                let mut o = observation(it, status, &BIRTH_CONTROL_METHOD, "");
                let (codes, text) = method_codes(c.method);
                o["valueCodeableConcept"] = concept(&codes, text);
                if !c.service_point.is_empty() {
                    o["performer"] = performer(&c.service_point);
                }
                if let Some(d) = human::date(c.since.as_ref()) {
                    o["note"] = json!([{ "text": format!("in use since {d}") }]);
                }
                entries.push(entry(urn_uuid(&it.record_id, 0), o));
            }
            // A retraction is not an observation of the person: it says an earlier record was
            // entered in error. That is exported as the withdrawn record's own Observation with
            // status `entered-in-error` (above, when the record is in this export). When it was
            // exported before, a bare `entered-in-error` Observation with the withdrawn record's
            // identifier lets the receiving system update its copy by identifier.
            Some(Payload::Retraction(r)) => {
                if it.supersedes.is_empty() || exported.contains(it.supersedes.as_slice()) {
                    continue;
                }
                let code = match pb::RecordKind::try_from(r.kind).unwrap_or_default() {
                    pb::RecordKind::PregnancyStatus => &PREGNANCY_STATUS,
                    _ => &BIRTH_CONTROL_METHOD,
                };
                let target = pb::InboxItem {
                    record_id: it.supersedes.clone(),
                    observed_on: None,
                    ..it.clone()
                };
                let o = observation(&target, "entered-in-error", code, "");
                entries.push(entry(urn_uuid(&it.supersedes, 0), o));
            }
        }
    }
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": human::instant(now_ms),
        "entry": entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: u32, m: u32, d: u32) -> Option<pb::Date> {
        Some(pb::Date {
            year: y,
            month: m,
            day: d,
        })
    }

    fn item(n: u8, payload: Payload) -> pb::InboxItem {
        pb::InboxItem {
            position: u64::from(n),
            record_id: vec![n; 32],
            origin: "310115".into(),
            seq: u64::from(n),
            agreement_id: "agr-310115-110105".into(),
            kind: match payload {
                Payload::Pregnancy(_) => pb::RecordKind::PregnancyStatus as i32,
                _ => pb::RecordKind::ContraceptionStatus as i32,
            },
            subject_ref: vec![0xab; 32],
            issued_at_ms: 1_780_272_000_000,
            observed_on: date(2026, 3, 10),
            supersedes: vec![],
            current: true,
            erased: false,
            arrived_at_ms: 1_780_272_001_000,
            payload: Some(payload),
            after_departure: false,
            awaiting_answer: false,
        }
    }

    fn pregnant() -> Payload {
        Payload::Pregnancy(pb::PregnancyStatus {
            state: pb::PregnancyState::Pregnant as i32,
            observed_on: date(2026, 3, 10),
            expected_delivery: Some(pb::YearMonth {
                year: 2026,
                month: 9,
            }),
            event_date: None,
            prenatal_visits: 2,
            service_point: "3101150042".into(),
        })
    }

    fn iud() -> Payload {
        Payload::Contraception(pb::ContraceptionStatus {
            method: pb::ContraceptiveMethod::Iud as i32,
            since: date(2024, 1, 1),
            observed_on: date(2026, 3, 10),
            service_point: "3101150042".into(),
        })
    }

    fn codes(v: &Value) -> Vec<(String, String)> {
        v["coding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["system"].as_str().unwrap().to_owned(),
                    c["code"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn a_pregnancy_is_an_ips_status_with_its_due_month_as_a_member() {
        let b = bundle(&[item(1, pregnant())], &HashSet::new(), 1_780_272_002_000);
        assert_eq!(b["resourceType"], "Bundle");
        assert_eq!(b["type"], "collection");
        assert_eq!(b["timestamp"], "2026-06-01T00:00:02Z");
        let entries = b["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        let o = &entries[0]["resource"];
        assert_eq!(o["resourceType"], "Observation");
        assert_eq!(o["status"], "final");
        assert_eq!(codes(&o["code"]), [(LOINC.into(), "82810-3".into())]);
        assert_eq!(
            codes(&o["valueCodeableConcept"]),
            [
                (LOINC.into(), "LA15173-0".into()),
                (SNOMED.into(), "77386006".into())
            ]
        );
        assert_eq!(o["effectiveDateTime"], "2026-03-10");
        assert_eq!(o["issued"], "2026-06-01T00:00:00Z");
        assert_eq!(o["identifier"][0]["value"], hex::encode([1u8; 32]));
        assert_eq!(o["id"], hex::encode([1u8; 32]));
        assert_eq!(
            o["subject"]["identifier"]["system"],
            "urn:interflow:agreement:agr-310115-110105"
        );
        assert_eq!(o["subject"]["identifier"]["value"], hex::encode([0xab; 32]));
        let edd = &entries[1];
        assert_eq!(o["hasMember"][0]["reference"], edd["fullUrl"]);
        assert_eq!(
            codes(&edd["resource"]["code"]),
            [(LOINC.into(), "11778-8".into())]
        );
        assert_eq!(edd["resource"]["valueDateTime"], "2026-09");
        assert!(edd["resource"]["id"].as_str().unwrap().len() <= 64);
        assert_ne!(entries[0]["fullUrl"], edd["fullUrl"]);
        assert!(
            entries[0]["fullUrl"]
                .as_str()
                .unwrap()
                .starts_with("urn:uuid:")
        );
    }

    #[test]
    fn delivered_is_not_pregnant_with_the_event_in_a_note() {
        let p = Payload::Pregnancy(pb::PregnancyStatus {
            state: pb::PregnancyState::Delivered as i32,
            observed_on: date(2026, 3, 10),
            expected_delivery: None,
            event_date: date(2026, 3, 1),
            prenatal_visits: 0,
            service_point: "3101150042".into(),
        });
        let b = bundle(&[item(1, p)], &HashSet::new(), 0);
        let o = &b["entry"][0]["resource"];
        assert_eq!(
            codes(&o["valueCodeableConcept"])[0],
            (LOINC.into(), "LA26683-5".into())
        );
        assert_eq!(o["note"][0]["text"], "delivered on 2026-03-01");
        assert!(o.get("hasMember").is_none());
    }

    #[test]
    fn contraception_codes_the_method_and_other_has_text_only() {
        let b = bundle(&[item(1, iud())], &HashSet::new(), 0);
        let o = &b["entry"][0]["resource"];
        assert_eq!(codes(&o["code"]), [(LOINC.into(), "8659-5".into())]);
        assert_eq!(
            codes(&o["valueCodeableConcept"]),
            [(LOINC.into(), "LA6527-1".into())]
        );
        assert_eq!(o["note"][0]["text"], "in use since 2024-01-01");
        assert_eq!(o["performer"][0]["identifier"]["value"], "3101150042");
        let (c, text) = method_codes(pb::ContraceptiveMethod::Other as i32);
        assert!(c.is_empty());
        assert_eq!(text, "other method");
        for m in 1..=7 {
            assert!(!method_codes(m).0.is_empty(), "{m}");
        }
    }

    #[test]
    fn withdrawn_records_are_entered_in_error_and_retractions_and_tombstones_are_not_observations()
    {
        let first = item(1, iud());
        let mut retraction = item(
            2,
            Payload::Retraction(pb::Retraction {
                kind: pb::RecordKind::ContraceptionStatus as i32,
            }),
        );
        retraction.supersedes = first.record_id.clone();
        retraction.observed_on = None;
        let mut tomb = item(3, iud());
        tomb.payload = None;
        tomb.erased = true;
        tomb.subject_ref.clear();
        let withdrawn: HashSet<Vec<u8>> = [first.record_id.clone()].into();
        let b = bundle(&[first.clone(), retraction.clone(), tomb], &withdrawn, 0);
        let entries = b["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "{b}");
        assert_eq!(entries[0]["resource"]["status"], "entered-in-error");

        // A retraction of a record exported before: a bare entered-in-error Observation with
        // the withdrawn record's identifier and no value.
        let b = bundle(&[retraction], &withdrawn, 0);
        let entries = b["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "{b}");
        let o = &entries[0]["resource"];
        assert_eq!(o["status"], "entered-in-error");
        assert_eq!(o["identifier"][0]["value"], hex::encode(&first.record_id));
        assert!(o.get("valueCodeableConcept").is_none());
        assert!(o.get("effectiveDateTime").is_none());
    }
}
