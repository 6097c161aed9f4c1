import { Document as Docx, Packer, Paragraph } from 'docx';
import { PDFDocument, StandardFonts } from 'pdf-lib';
import { describe, expect, it } from 'vitest';
import { detectFileType, DOCX, extractFileText, PDF, sniffText } from '../src/files.ts';
import { cleanFileName } from '../src/uploads.ts';

async function pdfOf(lines: string[], pages = 1): Promise<Uint8Array> {
  const pdf = await PDFDocument.create();
  const font = await pdf.embedFont(StandardFonts.Helvetica);
  for (let p = 0; p < pages; p++) {
    const page = pdf.addPage();
    lines.forEach((line, i) => page.drawText(line, { x: 40, y: 780 - i * 16, size: 11, font }));
  }
  return pdf.save();
}

async function docxOf(paragraphs: string[]): Promise<Uint8Array> {
  return Packer.toBuffer(new Docx({ sections: [{ children: paragraphs.map((text) => new Paragraph(text)) }] }));
}

const bytes = (text: string) => new TextEncoder().encode(text);
const refused = async (promise: Promise<unknown>) => {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e as { name: string; code: string; message: string },
  );
  expect(error?.name).toBe('FileRefusedError');
  return error!;
};

describe('file types, from the bytes', () => {
  it('recognises a PDF and a DOCX whatever they are called', async () => {
    expect(await detectFileType(await pdfOf(['Hello']))).toBe(PDF);
    expect(await detectFileType(await docxOf(['Hello']))).toBe(DOCX);
  });

  it('tells HTML, Markdown and plain text apart', async () => {
    expect(await detectFileType(bytes('<!DOCTYPE html><html><body><p>Hi</p></body></html>'))).toBe('text/html');
    expect(await detectFileType(bytes('\ufeff  <!-- a comment -->\n<html lang="en"><p>Hi</p></html>'))).toBe('text/html');
    expect(await detectFileType(bytes('# Report\n\nSolar grew.'))).toBe('text/markdown');
    expect(await detectFileType(bytes('Notes\n\n- one\n- two\n'))).toBe('text/markdown');
    expect(await detectFileType(bytes('Solar and wind capacity grew strongly.\nStorage costs fell.'))).toBe('text/plain');
  });

  it('refuses an executable, an image and binary noise with BAD_USER_INPUT', async () => {
    const elf = new Uint8Array(256);
    elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0x3e, 0, 1, 0, 0, 0]);
    const exe = new Uint8Array(256);
    exe.set([0x4d, 0x5a]);
    const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52, ...new Array(64).fill(0)]);
    const noise = new Uint8Array(1024).map((_, i) => (i * 7919) % 256);
    for (const file of [elf, exe, png, noise]) expect((await refused(detectFileType(file))).code).toBe('BAD_USER_INPUT');
  });

  it('does not take invalid UTF-8 or text full of control characters as text', () => {
    expect(sniffText(new Uint8Array([0x48, 0x69, 0xff, 0xfe]))).toBeNull();
    expect(sniffText(bytes('a\u0001b\u0002c\u0003d'))).toBeNull();
    expect(sniffText(bytes('a\u0000b'))).toBeNull();
  });
});

describe('text extraction', () => {
  it('reads the text of a PDF', async () => {
    const text = await extractFileText(await pdfOf(['Solar and wind capacity grew strongly.', 'Storage costs fell again.']), PDF);
    expect(text).toContain('Solar and wind capacity grew strongly.');
    expect(text).toContain('Storage costs fell again.');
  });

  it('reads the text of a DOCX', async () => {
    const text = await extractFileText(await docxOf(['Quarterly energy report', 'Battery storage costs fell.']), DOCX);
    expect(text).toBe('Quarterly energy report\n\nBattery storage costs fell.');
  });

  it('strips the markup of HTML and Markdown files', async () => {
    expect(await extractFileText(bytes('<html><body><h1>Title</h1><script>x()</script><p>Fish &amp; chips</p></body></html>'), 'text/html')).toBe('Title\n\nFish & chips');
    expect(await extractFileText(bytes('# Heading\n\nSome **bold** text.'), 'text/markdown')).toBe('Heading\n\nSome bold text.');
  });

  it('refuses a corrupt PDF, a PDF with no text and a corrupt DOCX with UNREADABLE_DOCUMENT', async () => {
    const good = await pdfOf(['Some text']);
    const corrupt = new Uint8Array([...bytes('%PDF-1.7\n'), ...good.slice(200, 600)]);
    expect((await refused(extractFileText(corrupt, PDF))).code).toBe('UNREADABLE_DOCUMENT');
    const empty = await PDFDocument.create();
    empty.addPage();
    expect((await refused(extractFileText(await empty.save(), PDF))).code).toBe('UNREADABLE_DOCUMENT');
    const docx = await docxOf(['Hello']);
    expect((await refused(extractFileText(docx.slice(0, docx.length / 2), DOCX))).code).toBe('UNREADABLE_DOCUMENT');
  });
});

describe('text limits', () => {
  it('refuses a file whose text is over DOCUMENT_MAX_BYTES, a PDF as soon as its pages are', async () => {
    const pdf = await pdfOf(['A line of text that repeats on every page of the document.'], 20);
    expect((await extractFileText(pdf, PDF)).length).toBeGreaterThan(1000);
    expect((await refused(extractFileText(pdf, PDF, 500))).code).toBe('BAD_USER_INPUT');
    expect((await refused(extractFileText(await docxOf(['x'.repeat(600)]), DOCX, 500))).code).toBe('BAD_USER_INPUT');
    expect((await refused(extractFileText(bytes('y'.repeat(600)), 'text/plain', 500))).code).toBe('BAD_USER_INPUT');
  });
});

describe('file names', () => {
  it('keeps the last path segment, without control characters', () => {
    expect(cleanFileName(encodeURIComponent('C:\\Users\\me\\report.pdf'))).toBe('report.pdf');
    expect(cleanFileName(encodeURIComponent('../../etc/passwd'))).toBe('passwd');
    expect(cleanFileName(encodeURIComponent('bad\u0000\nname.txt'))).toBe('badname.txt');
    expect(cleanFileName(encodeURIComponent('Ünïcode résumé.docx'))).toBe('Ünïcode résumé.docx');
    expect(cleanFileName(undefined)).toBe('upload');
    expect(cleanFileName('%E0%A4%A')).toBe('%E0%A4%A');
  });
});
