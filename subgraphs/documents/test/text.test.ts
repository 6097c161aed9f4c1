import { describe, expect, it } from 'vitest';
import { extractText, normalizeContentType } from '../src/text.ts';

describe('content types', () => {
  it('defaults to text/plain and ignores case and parameters', () => {
    expect(normalizeContentType(undefined)).toBe('text/plain');
    expect(normalizeContentType('')).toBe('text/plain');
    expect(normalizeContentType('Text/HTML; charset=utf-8')).toBe('text/html');
    expect(normalizeContentType('text/markdown')).toBe('text/markdown');
  });

  it('refuses anything else', () => {
    expect(normalizeContentType('application/pdf')).toBeNull();
    expect(normalizeContentType('text/csv')).toBeNull();
  });
});

describe('text extraction', () => {
  it('keeps plain text as it is, trimmed', () => {
    expect(extractText('  Hello <b>world</b>  ', 'text/plain')).toBe('Hello <b>world</b>');
  });

  it('drops HTML markup, scripts, styles and link targets, and decodes entities', () => {
    const text = extractText('<h1>Title</h1><script>evil()</script><style>p{color:red}</style><p>Fish &amp; chips at <a href="http://x.y">the pier</a>.</p>', 'text/html');
    expect(text).toContain('Title');
    expect(text).toContain('Fish & chips at the pier.');
    expect(text).not.toMatch(/evil|color|http|<|>/);
  });

  it('renders Markdown to text', () => {
    const text = extractText('# Heading\n\nSome **bold** and _italic_ text with a [link](http://example.com).\n\n- one\n- two', 'text/markdown');
    expect(text).toContain('Heading');
    expect(text).toContain('Some bold and italic text with a link.');
    expect(text).not.toMatch(/\*\*|\]\(|http/);
  });

  it('yields nothing for markup without text', () => {
    expect(extractText('<p> </p><br>', 'text/html')).toBe('');
  });
});
