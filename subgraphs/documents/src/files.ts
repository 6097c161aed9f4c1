import { fileTypeFromBuffer } from 'file-type';
import mammoth from 'mammoth';
import { getDocumentProxy } from 'unpdf';
import { extractText, type ContentType } from './text.ts';

/** Codes of refused files, on `extensions.code` (besides `BAD_USER_INPUT` and `PAYLOAD_TOO_LARGE`). */
export const FileErrorCode = {
  /** The file is of an accepted type, but no text could be read from it (corrupt, encrypted, only images). */
  UNREADABLE_DOCUMENT: 'UNREADABLE_DOCUMENT',
} as const;

export const PDF = 'application/pdf';
export const DOCX = 'application/vnd.openxmlformats-officedocument.wordprocessingml.document';

/** The types a file may be, detected from its bytes. */
export const FILE_TYPES = [PDF, DOCX, 'text/html', 'text/markdown', 'text/plain'] as const;
export type FileType = (typeof FILE_TYPES)[number];

/** A file refused for what it is; `code` is BAD_USER_INPUT (a type we do not take) or UNREADABLE_DOCUMENT. */
export class FileRefusedError extends Error {
  override name = 'FileRefusedError';
  constructor(
    readonly code: 'BAD_USER_INPUT' | typeof FileErrorCode.UNREADABLE_DOCUMENT,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * What a textual file is, from its bytes: file-type recognises binary formats only. Text is
 * valid UTF-8 with no NUL and few control characters; HTML when it opens with a doctype or an
 * `<html>`/`<head>`/`<body>` tag (after a BOM, blanks and comments); Markdown when it has
 * Markdown structure (ATX headings, lists, links, emphasis, fences) on at least two lines, or
 * one heading or fence; otherwise plain text. Returns null for anything that is not text.
 */
export function sniffText(bytes: Uint8Array): { type: 'text/html' | 'text/markdown' | 'text/plain'; text: string } | null {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    return null;
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  let control = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0) return null;
    // Tab, line feed, form feed and carriage return are text; other C0 characters are not.
    if (c < 32 && c !== 9 && c !== 10 && c !== 12 && c !== 13) control++;
  }
  if (control > text.length / 100) return null;
  const head = text.slice(0, 4096).replace(/^(\s|<!--[\s\S]*?-->)+/, '').toLowerCase();
  if (/^<!doctype html/.test(head) || /^<(html|head|body)[\s>]/.test(head)) return { type: 'text/html', text };
  const strong = /^(#{1,6} \S|```|~~~)/m.test(text);
  const signs = text.split('\n', 2000).filter((line) => /^\s*([-*+] |\d+\. |> )\S|\[[^\]]+\]\([^)\s]+\)|(\*\*|__)\S[^*_]*\S\1/.test(line)).length;
  return { type: strong || signs >= 2 ? 'text/markdown' : 'text/plain', text };
}

/**
 * The type of a file, detected from its bytes (file-type's magic numbers for binary formats,
 * {@link sniffText} for text), never from its name or the client's claim.
 * @throws FileRefusedError BAD_USER_INPUT for any type other than PDF, DOCX, HTML, Markdown and plain text
 */
export async function detectFileType(bytes: Uint8Array): Promise<FileType> {
  const detected = await fileTypeFromBuffer(bytes);
  if (detected) {
    if (detected.mime === PDF || detected.mime === DOCX) return detected.mime;
    throw new FileRefusedError('BAD_USER_INPUT', `files of type ${detected.mime} are not accepted; upload a PDF, DOCX, HTML, Markdown or plain-text file`);
  }
  const sniffed = sniffText(bytes);
  if (sniffed) return sniffed.type;
  throw new FileRefusedError('BAD_USER_INPUT', 'the file is of no accepted type; upload a PDF, DOCX, HTML, Markdown or plain-text file');
}

const unreadable = (message: string, cause?: unknown) => new FileRefusedError(FileErrorCode.UNREADABLE_DOCUMENT, message, cause === undefined ? undefined : { cause });

/**
 * The text of a file of a detected type: unpdf (pdf.js) for PDF, mammoth for DOCX, the
 * `uploadDocument` content path for HTML, Markdown and text. Holds the whole file in memory
 * (the libraries need it): bounded by DOCUMENT_MAX_FILE_BYTES.
 * @throws FileRefusedError UNREADABLE_DOCUMENT when no text can be read (corrupt, encrypted, only images);
 *   BAD_USER_INPUT when its text is over `maxTextBytes` (DOCUMENT_MAX_BYTES)
 */
export async function extractFileText(bytes: Uint8Array, type: FileType, maxTextBytes = Number.POSITIVE_INFINITY): Promise<string> {
  let raw: string;
  if (type === PDF) {
    raw = await pdfText(bytes, maxTextBytes);
  } else if (type === DOCX) {
    try {
      raw = (await mammoth.extractRawText({ buffer: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) })).value;
    } catch (error) {
      throw unreadable(`the DOCX file cannot be read (${(error as Error).message ?? String(error)})`, error);
    }
  } else {
    const sniffed = sniffText(bytes);
    if (!sniffed) throw unreadable('the file is not valid UTF-8 text');
    raw = sniffed.text;
  }
  const text = extractText(raw, type === PDF || type === DOCX ? 'text/plain' : (type as ContentType));
  if (text.length === 0) throw unreadable('the file has no text to read (a scan? only images?)');
  const size = Buffer.byteLength(text, 'utf8');
  if (size > maxTextBytes) throw tooMuchText(size, maxTextBytes);
  return text;
}

const tooMuchText = (size: number, max: number) => new FileRefusedError('BAD_USER_INPUT', `the file's text is ${Number.isFinite(size) ? `${size} bytes` : 'too long'}; the limit is ${max} (DOCUMENT_MAX_BYTES)`);

/**
 * A PDF's text, page by page (pdf.js), stopping as soon as it is over `maxTextBytes`: reading a
 * long PDF costs about a second per 400,000 characters, and there is no point reading past
 * what would be refused. Awaiting each page also lets other requests in between.
 */
async function pdfText(bytes: Uint8Array, maxTextBytes: number): Promise<string> {
  let pdf: Awaited<ReturnType<typeof getDocumentProxy>>;
  try {
    // pdf.js takes ownership of (detaches) the buffer it is given: hand it a copy.
    pdf = await getDocumentProxy(new Uint8Array(bytes), { verbosity: 0 });
  } catch (error) {
    const name = (error as { name?: unknown } | null)?.name;
    throw unreadable(name === 'PasswordException' ? 'the PDF is encrypted' : `the PDF cannot be read (${errorText(error)})`, error);
  }
  try {
    const pages: string[] = [];
    let size = 0;
    for (let n = 1; n <= pdf.numPages; n++) {
      let page: string;
      try {
        const content = await (await pdf.getPage(n)).getTextContent();
        page = content.items.map((item) => ('str' in item ? item.str + (item.hasEOL ? '\n' : '') : '')).join('');
      } catch (error) {
        throw unreadable(`page ${n} of the PDF cannot be read (${errorText(error)})`, error);
      }
      size += Buffer.byteLength(page, 'utf8');
      if (size > maxTextBytes) throw tooMuchText(Number.POSITIVE_INFINITY, maxTextBytes);
      pages.push(page);
    }
    return pages.join('\n\n');
  } finally {
    await pdf.destroy().catch(() => {});
  }
}

const errorText = (error: unknown) => (error instanceof Error ? error.message : String(error));
