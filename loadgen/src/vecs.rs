//! Readers for the texmex vector formats (fvecs / ivecs) and raw little-endian arrays.
//!
//! Each fvecs/ivecs record is a little-endian int32 dimension `d` followed by `d` 4-byte
//! values. Every error names the file and the byte offset where the problem starts, so a
//! truncated download is easy to tell from a wrong format.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Largest dimension we accept: a guard against reading a wrong file as fvecs.
const MAX_DIM: usize = 1 << 16;

/// Row-major matrix read from a vecs file.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix<T> {
    pub dim: usize,
    pub rows: usize,
    pub data: Vec<T>,
}

impl<T> Matrix<T> {
    pub fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// Streaming reader over the records of an fvecs/ivecs file; all records must share one dimension.
pub struct VecsReader<R> {
    inner: R,
    path: PathBuf,
    offset: u64,
    dim: Option<usize>,
    raw: Vec<u8>,
}

impl VecsReader<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self::new(BufReader::with_capacity(1 << 20, file), path))
    }
}

impl<R: Read> VecsReader<R> {
    pub fn new(inner: R, path: &Path) -> Self {
        Self {
            inner,
            path: path.to_owned(),
            offset: 0,
            dim: None,
            raw: Vec::new(),
        }
    }

    /// Dimension of the records read so far (None before the first record).
    pub fn dim(&self) -> Option<usize> {
        self.dim
    }

    /// Reads the next record's raw 4-byte values; Ok(None) at a clean end of file.
    fn next_raw(&mut self) -> Result<Option<&[u8]>> {
        let start = self.offset;
        let mut header = [0u8; 4];
        let got = read_full(&mut self.inner, &mut header).with_context(|| {
            format!("{}: read error at byte offset {start}", self.path.display())
        })?;
        if got == 0 {
            return Ok(None);
        }
        if got < 4 {
            bail!(
                "{}: truncated record header at byte offset {start} ({got} of 4 bytes)",
                self.path.display()
            );
        }
        let d = i32::from_le_bytes(header);
        if d <= 0 || d as usize > MAX_DIM {
            bail!(
                "{}: invalid dimension {d} at byte offset {start}",
                self.path.display()
            );
        }
        let d = d as usize;
        match self.dim {
            Some(expected) if expected != d => bail!(
                "{}: dimension {d} at byte offset {start} differs from the first record's {expected}",
                self.path.display()
            ),
            _ => self.dim = Some(d),
        }
        self.raw.resize(d * 4, 0);
        let got = read_full(&mut self.inner, &mut self.raw).with_context(|| {
            format!(
                "{}: read error in record at byte offset {start}",
                self.path.display()
            )
        })?;
        if got < d * 4 {
            bail!(
                "{}: truncated record at byte offset {start}: expected {} bytes of values, file ends after {got}",
                self.path.display(),
                d * 4
            );
        }
        self.offset += 4 + (d * 4) as u64;
        Ok(Some(&self.raw))
    }

    /// Appends the next record as f32 values to `out`; Ok(false) at end of file.
    pub fn next_f32(&mut self, out: &mut Vec<f32>) -> Result<bool> {
        match self.next_raw()? {
            None => Ok(false),
            Some(raw) => {
                out.extend(
                    raw.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
                Ok(true)
            }
        }
    }

    /// Appends the next record as i32 values to `out`; Ok(false) at end of file.
    pub fn next_i32(&mut self, out: &mut Vec<i32>) -> Result<bool> {
        match self.next_raw()? {
            None => Ok(false),
            Some(raw) => {
                out.extend(
                    raw.chunks_exact(4)
                        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
                Ok(true)
            }
        }
    }
}

/// Reads until `buf` is full or end of file; returns the number of bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads a whole fvecs file, at most `limit` rows.
pub fn read_fvecs(path: &Path, limit: Option<usize>) -> Result<Matrix<f32>> {
    let mut reader = VecsReader::open(path)?;
    let mut data = Vec::new();
    let mut rows = 0;
    while limit.is_none_or(|l| rows < l) && reader.next_f32(&mut data)? {
        rows += 1;
    }
    if rows == 0 {
        bail!("{}: no vectors", path.display());
    }
    Ok(Matrix {
        dim: reader.dim().unwrap_or(0),
        rows,
        data,
    })
}

/// Reads a whole ivecs file, at most `limit` rows.
pub fn read_ivecs(path: &Path, limit: Option<usize>) -> Result<Matrix<i32>> {
    let mut reader = VecsReader::open(path)?;
    let mut data = Vec::new();
    let mut rows = 0;
    while limit.is_none_or(|l| rows < l) && reader.next_i32(&mut data)? {
        rows += 1;
    }
    if rows == 0 {
        bail!("{}: no vectors", path.display());
    }
    Ok(Matrix {
        dim: reader.dim().unwrap_or(0),
        rows,
        data,
    })
}

/// Reads a raw little-endian u32 array.
pub fn read_u32_array(path: &Path) -> Result<Vec<u32>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() % 4 != 0 {
        bail!(
            "{}: size {} is not a multiple of 4 bytes",
            path.display(),
            bytes.len()
        );
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(values: &[f32]) -> Vec<u8> {
        let mut out = (values.len() as i32).to_le_bytes().to_vec();
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Vec<f32>>> {
        let mut reader = VecsReader::new(bytes, Path::new("mem.fvecs"));
        let mut rows = Vec::new();
        loop {
            let mut row = Vec::new();
            if !reader.next_f32(&mut row)? {
                return Ok(rows);
            }
            rows.push(row);
        }
    }

    #[test]
    fn reads_records() {
        let mut bytes = record(&[1.0, 2.0, 3.0]);
        bytes.extend(record(&[4.0, 5.5, -6.0]));
        assert_eq!(
            read_all(&bytes).unwrap(),
            vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.5, -6.0]]
        );
    }

    #[test]
    fn truncated_values_name_the_record_offset() {
        let mut bytes = record(&[1.0, 2.0, 3.0]);
        bytes.extend(record(&[4.0, 5.0, 6.0]));
        bytes.truncate(bytes.len() - 2);
        let err = read_all(&bytes).unwrap_err().to_string();
        assert!(err.contains("truncated record at byte offset 16"), "{err}");
        assert!(err.contains("file ends after 10"), "{err}");
    }

    #[test]
    fn truncated_header_names_the_offset() {
        let mut bytes = record(&[1.0, 2.0]);
        bytes.extend_from_slice(&[2, 0]);
        let err = read_all(&bytes).unwrap_err().to_string();
        assert!(
            err.contains("truncated record header at byte offset 12"),
            "{err}"
        );
    }

    #[test]
    fn dimension_change_is_an_error() {
        let mut bytes = record(&[1.0, 2.0]);
        bytes.extend(record(&[1.0, 2.0, 3.0]));
        let err = read_all(&bytes).unwrap_err().to_string();
        assert!(
            err.contains("dimension 3 at byte offset 12 differs"),
            "{err}"
        );
    }

    #[test]
    fn absurd_dimension_is_an_error() {
        let err = read_all(&(-5i32).to_le_bytes()).unwrap_err().to_string();
        assert!(
            err.contains("invalid dimension -5 at byte offset 0"),
            "{err}"
        );
    }
}
