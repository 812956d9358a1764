/**
 * Iterates `source` one item ahead: the next item is being fetched while the caller works on this
 * one. For pages of a query whose handling takes a round trip of its own (a sweep's claims), this
 * halves the time the two take together.
 */
export async function* readAhead<T>(source: AsyncIterable<T>): AsyncGenerator<T> {
  const iterator = source[Symbol.asyncIterator]();
  let next = iterator.next();
  let finished = false;
  try {
    for (;;) {
      const result = await next;
      if (result.done) {
        finished = true;
        return;
      }
      next = iterator.next();
      yield result.value;
    }
  } catch (error) {
    finished = true;
    throw error;
  } finally {
    if (!finished) {
      // The caller stopped early: the fetch under way is not wanted, and its failure is nobody's.
      next.catch(() => undefined);
      await iterator.return?.();
    }
  }
}
