import { convert } from 'html-to-text';
import { marked } from 'marked';

/** Content types accepted by `uploadDocument`. */
export const CONTENT_TYPES = ['text/plain', 'text/markdown', 'text/html'] as const;
export type ContentType = (typeof CONTENT_TYPES)[number];

/** `text/HTML; charset=utf-8` → `text/html`; unknown types → null. */
export function normalizeContentType(value: string | null | undefined): ContentType | null {
  if (value === null || value === undefined || value.trim() === '') return 'text/plain';
  const base = value.split(';')[0]!.trim().toLowerCase();
  return (CONTENT_TYPES as readonly string[]).includes(base) ? (base as ContentType) : null;
}

const htmlOptions = {
  wordwrap: false as const,
  selectors: [
    { selector: 'a', options: { ignoreHref: true } },
    { selector: 'img', format: 'skip' },
    { selector: 'script', format: 'skip' },
    { selector: 'style', format: 'skip' },
    { selector: 'h1', options: { uppercase: false } },
    { selector: 'h2', options: { uppercase: false } },
    { selector: 'h3', options: { uppercase: false } },
    { selector: 'h4', options: { uppercase: false } },
    { selector: 'h5', options: { uppercase: false } },
    { selector: 'h6', options: { uppercase: false } },
    { selector: 'table', options: { uppercaseHeaderCells: false } },
  ],
};

/** The plain text analysis reads: markdown is rendered and HTML converted, markup dropped. */
export function extractText(content: string, contentType: ContentType): string {
  const text =
    contentType === 'text/plain'
      ? content
      : convert(contentType === 'text/markdown' ? (marked.parse(content, { async: false }) as string) : content, htmlOptions);
  // Collapse the blank-line runs conversion leaves, keep paragraph breaks.
  return text.replace(/\r\n?/g, '\n').replace(/[ \t]+\n/g, '\n').replace(/\n{3,}/g, '\n\n').trim();
}
