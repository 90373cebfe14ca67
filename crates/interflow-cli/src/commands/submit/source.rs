//! Reading a submission file row by row: CSV with a header naming the columns, or JSON Lines
//! with the same keys. A row that cannot be read becomes a [`RowError`] and the file goes on;
//! only I/O errors and a bad CSV header stop it. Nothing here checks what the fields mean
//! (that is [`super::row`]).

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::path::Path;

use anyhow::{Context as _, bail};

use super::row::{COLUMNS, Fields, REQUIRED_COLUMNS, RowError, row_error};
use crate::cli::InputFormat;

/// A row as read, before parsing: its line number and fields, or why it cannot be read.
pub type RawRow = Result<(u64, Fields), RowError>;

/// Reads rows from a file, one at a time.
pub trait RowSource {
    /// The next row; `Ok(None)` at the end. Errors are fatal (I/O, a bad header).
    fn next_row(&mut self) -> anyhow::Result<Option<RawRow>>;
    /// Bytes consumed so far, for the progress bar.
    fn bytes_read(&self) -> u64;
}

/// CSV with a header row naming the columns.
pub struct CsvRows<R: Read> {
    reader: csv::Reader<R>,
    header: Vec<String>,
    record: csv::StringRecord,
}

impl<R: Read> std::fmt::Debug for CsvRows<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvRows")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl<R: Read> CsvRows<R> {
    pub fn new(input: R) -> anyhow::Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .trim(csv::Trim::All)
            .from_reader(input);
        let header: Vec<String> = reader
            .headers()
            .context("reading the CSV header")?
            .iter()
            .map(|h| h.trim().to_owned())
            .collect();
        if header.iter().all(String::is_empty) && reader.is_done() {
            bail!(
                "empty file: it holds no header and no rows; the first line must name the columns, e.g. {}",
                COLUMNS.join(",")
            );
        }
        for h in &header {
            if !COLUMNS.contains(&h.as_str()) {
                bail!(
                    "the CSV header has an unknown column `{h}`; the columns are {}",
                    COLUMNS.join(",")
                );
            }
        }
        for (i, h) in header.iter().enumerate() {
            if header[..i].contains(h) {
                bail!("the CSV header names column `{h}` twice");
            }
        }
        let missing: Vec<&str> = REQUIRED_COLUMNS
            .iter()
            .copied()
            .filter(|c| !header.iter().any(|h| h == c))
            .collect();
        if !missing.is_empty() {
            bail!(
                "the CSV header lacks the column(s) {}; the first line must name the columns, e.g. {}",
                missing.join(", "),
                COLUMNS.join(",")
            );
        }
        Ok(CsvRows {
            reader,
            header,
            record: csv::StringRecord::new(),
        })
    }
}

impl<R: Read> RowSource for CsvRows<R> {
    fn next_row(&mut self) -> anyhow::Result<Option<RawRow>> {
        let next_line = self.reader.position().line();
        match self.reader.read_record(&mut self.record) {
            Ok(false) => Ok(None),
            Ok(true) => {
                let row = self
                    .record
                    .position()
                    .map_or(next_line, csv::Position::line);
                let fields = Fields(
                    self.header
                        .iter()
                        .zip(self.record.iter())
                        .map(|(h, v)| (h.clone(), v.to_owned()))
                        .collect(),
                );
                Ok(Some(Ok((row, fields))))
            }
            Err(e) => {
                let row = e.position().map_or(next_line, csv::Position::line);
                let reason = match e.kind() {
                    csv::ErrorKind::UnequalLengths { len, .. } => format!(
                        "has {len} fields but the header has {}; check for a missing or extra comma",
                        self.header.len()
                    ),
                    csv::ErrorKind::Utf8 { .. } => {
                        "is not valid UTF-8; save the file as UTF-8".into()
                    }
                    csv::ErrorKind::Io(_) => {
                        return Err(anyhow::Error::new(e).context("reading the CSV file"));
                    }
                    _ => "cannot be read as CSV".into(),
                };
                Ok(Some(Err(row_error(row, "", "", "unreadable_row", reason))))
            }
        }
    }

    fn bytes_read(&self) -> u64 {
        self.reader.position().byte()
    }
}

/// JSON Lines: one object per line with the same keys as the CSV columns. Blank lines are
/// skipped; numbers are accepted where text is expected (e.g. `prenatal_visits`).
pub struct JsonlRows<R: BufRead> {
    input: R,
    line_no: u64,
    bytes: u64,
    buf: String,
}

impl<R: BufRead> std::fmt::Debug for JsonlRows<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonlRows")
            .field("line_no", &self.line_no)
            .finish_non_exhaustive()
    }
}

impl<R: BufRead> JsonlRows<R> {
    pub fn new(input: R) -> Self {
        JsonlRows {
            input,
            line_no: 0,
            bytes: 0,
            buf: String::new(),
        }
    }
}

/// The fields of one JSON object, or why it is not a row.
pub fn fields_from_json(row: u64, line: &str) -> RawRow {
    let bad =
        |field: &str, code: &str, reason: String| Err(row_error(row, "", field, code, reason));
    let value: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            return bad(
                "",
                "unreadable_row",
                format!(
                    "is not valid JSON (column {}); each line must be one object",
                    e.column()
                ),
            );
        }
    };
    let serde_json::Value::Object(map) = value else {
        return bad("", "unreadable_row", "is not a JSON object".into());
    };
    let mut fields = BTreeMap::new();
    for (k, v) in map {
        if !COLUMNS.contains(&k.as_str()) {
            return bad(
                &k,
                "unreadable_row",
                format!("is not a known column; the keys are {}", COLUMNS.join(",")),
            );
        }
        let text = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Null => String::new(),
            _ => {
                return bad(&k, "unreadable_row", "must be a string or a number".into());
            }
        };
        fields.insert(k, text);
    }
    Ok((row, Fields(fields)))
}

impl<R: BufRead> RowSource for JsonlRows<R> {
    fn next_row(&mut self) -> anyhow::Result<Option<RawRow>> {
        loop {
            self.buf.clear();
            let n = self
                .input
                .read_line(&mut self.buf)
                .context("reading the JSONL file")?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            self.bytes += n as u64;
            let line = self.buf.trim();
            if line.is_empty() {
                continue;
            }
            return Ok(Some(fields_from_json(self.line_no, line)));
        }
    }

    fn bytes_read(&self) -> u64 {
        self.bytes
    }
}

/// The format named by the file's extension: `.jsonl`, `.ndjson` or `.json` is JSON Lines,
/// anything else CSV.
pub fn detect_format(path: &Path) -> InputFormat {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("jsonl" | "ndjson" | "json") => InputFormat::Jsonl,
        _ => InputFormat::Csv,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::submit::row::parse_row;
    use crate::commands::submit::row::tests::RULES;
    use interflow_core::pb;

    #[test]
    fn csv_rows_carry_line_numbers_and_bad_rows_do_not_stop_the_file() {
        let text = "\u{feff}idempotency_key,destination,national_id,kind,state,observed_on,expected_delivery,prenatal_visits,service_point\n\
                    k1,110105,11010519491231002X,pregnancy,pregnant,2026-03-10,2026-10,2,3101150042\n\
                    k2,110105,11010519491231002X,pregnancy\n\
                    ,110105,11010519491231002X,pregnancy,pregnant,2026-03-10,2026-10,2,3101150042\n";
        let mut src = CsvRows::new(text.as_bytes()).unwrap();
        let (row, f) = src.next_row().unwrap().unwrap().unwrap();
        assert_eq!(row, 2);
        assert!(parse_row(row, &f, &RULES).is_ok());
        let bad = src.next_row().unwrap().unwrap().unwrap_err();
        assert_eq!((bad.row, bad.code.as_str()), (3, "unreadable_row"));
        assert!(
            bad.reason.contains("has 4 fields but the header has 9"),
            "{}",
            bad.reason
        );
        let (row, f) = src.next_row().unwrap().unwrap().unwrap();
        assert_eq!(row, 4);
        let e = parse_row(row, &f, &RULES).unwrap_err();
        assert_eq!((e.row, e.field.as_str()), (4, "idempotency_key"));
        assert!(src.next_row().unwrap().is_none());
        assert_eq!(src.bytes_read(), text.len() as u64);
    }

    #[test]
    fn csv_header_must_name_known_and_required_columns() {
        let e = CsvRows::new("idempotency_key,destination,national_id,kind,colour\n".as_bytes())
            .unwrap_err();
        assert!(e.to_string().contains("unknown column `colour`"), "{e}");
        let e = CsvRows::new("idempotency_key,destination,kind\n".as_bytes()).unwrap_err();
        assert!(
            e.to_string().contains("lacks the column(s) national_id"),
            "{e}"
        );
        let e = CsvRows::new("idempotency_key,destination,national_id,kind,kind\n".as_bytes())
            .unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn an_empty_csv_is_reported_as_an_empty_file() {
        for text in ["", "\n"] {
            let e = CsvRows::new(text.as_bytes()).unwrap_err();
            assert!(e.to_string().starts_with("empty file"), "{text:?}: {e}");
            assert!(!e.to_string().contains("lacks"), "{e}");
        }
    }

    #[test]
    fn jsonl_rows_accept_numbers_and_report_bad_lines() {
        let text = concat!(
            r#"{"idempotency_key":"j1","destination":"110105","national_id":"11010519491231002X","kind":"pregnancy","state":"pregnant","observed_on":"2026-03-10","expected_delivery":"2026-10","prenatal_visits":3,"service_point":"3101150042","supersedes":null}"#,
            "\n\n",
            "not json\n",
            r#"{"idempotency_key":"j3","colour":"red"}"#,
            "\n",
            "[1,2]\n",
        );
        let mut src = JsonlRows::new(text.as_bytes());
        let (row, f) = src.next_row().unwrap().unwrap().unwrap();
        assert_eq!(row, 1);
        let s = parse_row(row, &f, &RULES).unwrap();
        let Some(pb::submission::Payload::Pregnancy(p)) = s.payload else {
            panic!("not a pregnancy payload");
        };
        assert_eq!(p.prenatal_visits, 3);
        let e = src.next_row().unwrap().unwrap().unwrap_err();
        assert_eq!((e.row, e.code.as_str()), (3, "unreadable_row"));
        let e = src.next_row().unwrap().unwrap().unwrap_err();
        assert_eq!((e.row, e.field.as_str()), (4, "colour"));
        let e = src.next_row().unwrap().unwrap().unwrap_err();
        assert_eq!(e.row, 5);
        assert!(e.reason.contains("not a JSON object"));
        assert!(src.next_row().unwrap().is_none());
    }

    #[test]
    fn the_sample_file_parses_completely() {
        let text = include_str!("../../../../../deploy/examples/submit-sample.csv");
        let mut src = CsvRows::new(text.as_bytes()).unwrap();
        let mut n = 0;
        while let Some(raw) = src.next_row().unwrap() {
            let (row, f) = raw.unwrap();
            let s = parse_row(row, &f, &RULES).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(s.destination, "110105");
            n += 1;
        }
        assert!(n >= 8, "{n}");
    }
}
