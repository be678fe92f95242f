/**
 * Positions after substitution point into the text the user wrote: every replacement is
 * recorded, so an offset in the substituted text maps back to the original offset (an
 * offset inside a substituted value maps to the start of its placeholder).
 */
export interface Replacement {
  origStart: number;
  origEnd: number;
  newStart: number;
  newEnd: number;
}

export class LineIndex {
  private readonly starts: number[] = [0];
  constructor(text: string) {
    for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) this.starts.push(i + 1);
  }
  /** 1-based line and column of a 0-based offset. */
  position(offset: number): { line: number; col: number } {
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid] <= offset) lo = mid;
      else hi = mid - 1;
    }
    return { line: lo + 1, col: offset - this.starts[lo] + 1 };
  }
}

export class SourceMap {
  private readonly index: LineIndex;
  /** Sorted by newStart (they are produced left to right). */
  constructor(
    readonly original: string,
    private readonly replacements: Replacement[],
  ) {
    this.index = new LineIndex(original);
  }

  originalOffset(newOffset: number): number {
    let lo = 0;
    let hi = this.replacements.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.replacements[mid].newStart <= newOffset) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    if (found < 0) return newOffset;
    const r = this.replacements[found];
    if (newOffset < r.newEnd) return r.origStart;
    return r.origEnd + (newOffset - r.newEnd);
  }

  /** Line/col in the original text of an offset in the substituted text. */
  position(newOffset: number): { line: number; col: number } {
    return this.index.position(this.originalOffset(newOffset));
  }

  /** Line/col of an offset in the original text. */
  originalPosition(offset: number): { line: number; col: number } {
    return this.index.position(offset);
  }
}
