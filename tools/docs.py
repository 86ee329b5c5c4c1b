"""Offline docs renderer for semsim: the same processed notebooks Quarto would render, turned into a static site.

Quarto cannot be installed on every machine (it is not on PyPI as a wheel). Where it is missing, this script:
1. runs nbdev's own notebook processing (`proc_nbs`: directives, `show_doc`, front matter) into `_proc/`;
2. converts each processed notebook to HTML with nbconvert, with MathJax served from a local copy
   (the `jupyter-server-mathjax` package) and no script loaded from the network;
3. adds a navigation bar in reading order (index, then notebooks by number, then tutorials);
4. writes README.md from `nbs/index.ipynb` (`--readme`), or checks that it is fresh (`--check-readme`).

Usage: python tools/docs.py [--out _site] [--readme | --check-readme] [--check]
"""
from __future__ import annotations
import argparse, html, json, re, shutil, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MATHJAX_CONFIG = 'TeX-AMS-MML_HTMLorMML-full'  # the CHTML config is not in the packaged MathJax 2.7 copy
MATHJAX_FONTS = ('<script type="text/x-mathjax-config">MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], '
                 'webFont: "STIX-Web", preferredFont: null, imageFont: null}, SVG: {font: "STIX-Web"}});</script>')
NETWORK_RE = re.compile(r'<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=\s*["\']?\s*(https?:)?//', re.I)


def _proc():
    "Process notebooks with nbdev (front matter, directives, show_doc) into `_proc/`; return that folder."
    from nbdev.serve import proc_nbs
    from nbdev.doclinks import _build_modidx
    from nbdev.quarto import refresh_quarto_yml
    refresh_quarto_yml()
    _build_modidx()
    return Path(proc_nbs(ROOT/'nbs', n_workers=0))


def _front_matter(nb):
    "Pop the raw YAML front matter cell nbdev made from the `# Title` / `> description` cell."
    meta = {}
    for i, c in enumerate(nb.cells):
        src = c.source if isinstance(c.source, str) else ''.join(c.source)
        if c.cell_type == 'raw' and src.strip().startswith('---'):
            import yaml
            meta = yaml.safe_load(src.strip().strip('-')) or {}
            del nb.cells[i]
            break
    return meta


def _clean(nb):
    "Drop keys nbdev adds that nbformat's schema rejects."
    nb.metadata.pop('execution', None)
    nb.metadata.setdefault('language_info', {'name': 'python'})   # code fences and highlighting say python
    for c in nb.cells:
        c.pop('has_sd', None)
        c.get('metadata', {}).pop('execution', None)
        if c.cell_type != 'code':
            c.pop('outputs', None); c.pop('execution_count', None)
    return nb


DIRECTIVE_RE = re.compile(r'^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')
ATTR_RE = re.compile(r'(\]\([^)]*\))\{[^}]*\}')  # Quarto link attributes: [text](url){target="_blank" ...}


def _quarto_directives(nb):
    "Apply the Quarto cell options nbdev leaves in processed notebooks (echo, output, include), as Quarto would."
    import nbformat
    cells = []
    for c in nb.cells:
        if c.cell_type == 'markdown':
            c.source = ATTR_RE.sub(r'\1', c.source); cells.append(c); continue
        if c.cell_type != 'code': cells.append(c); continue
        lines, opts = c.source.splitlines(), {}
        while lines and DIRECTIVE_RE.match(lines[0]):
            k, v = DIRECTIVE_RE.match(lines[0]).groups(); opts[k] = v.strip('"\'').lower(); lines.pop(0)
        c.source = '\n'.join(lines)
        if opts.get('include') == 'false': continue
        if opts.get('output') == 'false': c.outputs = []
        if opts.get('output') == 'asis':
            md = []
            for o in c.get('outputs', []):
                data = o.get('data', {})
                txt = data.get('text/markdown') or (o.get('text') if o.get('output_type') == 'stream' else None) or ''
                md.append(txt if isinstance(txt, str) else ''.join(txt))
            if opts.get('echo') != 'false' and c.source.strip(): cells.append(c)
            if ''.join(md).strip(): cells.append(nbformat.v4.new_markdown_cell(ATTR_RE.sub(r'\1', '\n'.join(md))))
            continue
        if opts.get('echo') == 'false':
            c.metadata.setdefault('tags', []).append('remove_input')
            if not c.get('outputs'): continue
        if not c.source.strip() and not c.get('outputs'): continue
        cells.append(c)
    nb.cells = cells
    return nb


def _order(paths, base):
    "Reading order: index first, numbered notebooks, then tutorials."
    def key(p):
        rel = p.relative_to(base)
        return (rel.stem != 'index', len(rel.parts) > 1, str(rel))
    return sorted(paths, key=key)


def _load(p):
    import nbformat
    nb = nbformat.read(p, as_version=4)
    meta = _front_matter(nb)
    return _quarto_directives(_clean(nb)), meta


SECTIONS = {'0': 'Core library', '1': 'Formal ingredients', '2': 'Models', '3': 'Training and inference', '4': 'Analysis'}


def _section(rel):
    "Sidebar section of a page from its reading-order number (00–09 core, 10–19 ingredients, …) or folder."
    p = Path(rel)
    if len(p.parts) > 1: return p.parts[0].replace('_', ' ').capitalize()
    if p.stem == 'index': return ''
    return SECTIONS.get(p.stem[0], 'More') if p.stem[:2].isdigit() else 'More'


def _href(rel, here):
    return (Path(*(['..'] * (len(Path(here).parts) - 1)), rel) if len(Path(here).parts) > 1 else Path(rel)).as_posix()


def _nav(pages, here, out):
    "A sidebar linking every page in reading order, grouped by section, relative to `here`."
    items, current = [], None
    for rel, title in pages:
        sec = _section(rel)
        if sec != current:
            if sec: items.append(f'<div class="sec">{html.escape(sec)}</div>')
            current = sec
        cls = ' class="active"' if rel == here else ''
        items.append(f'<a{cls} href="{_href(rel, here)}">{html.escape(title)}</a>')
    return '<nav id="semsim-nav"><a class="brand" href="' + _href('index.html', here) + '">semsim</a>' + ''.join(items) + '</nav>'


def _pager(pages, here):
    "Previous / next links in reading order."
    rels = [r for r, _ in pages]; i = rels.index(here); out = []
    if i > 0: out.append(f'<a href="{_href(rels[i-1], here)}">← {html.escape(pages[i-1][1])}</a>')
    if i + 1 < len(rels): out.append(f'<a style="float:right" href="{_href(rels[i+1], here)}">{html.escape(pages[i+1][1])} →</a>')
    return '<div id="semsim-pager">' + ''.join(out) + '</div>'


NAV_CSS = """<style>
#semsim-nav{position:fixed;top:0;left:0;bottom:0;width:230px;overflow-y:auto;background:#1f2937;padding:1em .8em;font-family:sans-serif;font-size:14px;z-index:10}
#semsim-nav a{display:block;color:#e5e7eb;text-decoration:none;padding:.15em 0 .15em .4em}#semsim-nav a.active{color:#fbbf24;font-weight:bold}
#semsim-nav a.brand{color:#fff;font-weight:bold;font-size:18px;padding-left:0;margin-bottom:.6em}
#semsim-nav .sec{color:#9ca3af;text-transform:uppercase;font-size:11px;letter-spacing:.05em;margin-top:1em}
body{margin-left:250px !important}
#semsim-pager{margin:3em 1em 2em 1em;padding-top:1em;border-top:1px solid #e5e7eb;font-family:sans-serif}
.semsim-desc{font-size:1.15em;color:#4b5563;border-left:4px solid #d1d5db;padding-left:.8em;margin:0 0 1em 0}
@media (max-width:800px){#semsim-nav{position:static;width:auto}body{margin-left:0 !important}}
</style>"""


def render_site(out: Path):
    "Render every processed notebook to `out/` as a static site with local MathJax; return the page list."
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor
    proc = _proc()
    nbs = _order([p for p in proc.rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts], proc)
    if out.exists(): shutil.rmtree(out)
    out.mkdir(parents=True)
    import jupyter_server_mathjax
    mj_src = Path(jupyter_server_mathjax.__file__).parent/'static'
    shutil.copytree(mj_src, out/'mathjax', ignore=shutil.ignore_patterns('*.md', 'docs', 'test', 'unpacked'))
    loaded = [(p, *_load(p)) for p in nbs]
    pages = [(p.relative_to(proc).with_suffix('.html').as_posix(), meta.get('title', p.stem)) for p, _, meta in loaded]
    for (p, nb, meta), (rel, title) in zip(loaded, pages):
        depth = len(Path(rel).parts) - 1
        mj = '../' * depth + f'mathjax/MathJax.js?config={MATHJAX_CONFIG}'
        exp = HTMLExporter(template_name='lab', mathjax_url=mj, exclude_input_prompt=True, exclude_output_prompt=True)
        exp.register_preprocessor(TagRemovePreprocessor(remove_input_tags={'remove_input'}, enabled=True), enabled=True)
        body, res = exp.from_notebook_node(nb, resources={'metadata': {'name': title}})
        body = re.sub(r'<script[^>]*src="https://cdnjs[^"]*require[^"]*"[^>]*></script>', '', body)
        # the packaged MathJax 2.7 ships only the STIX-Web fonts: tell the HTML-CSS output to use them
        body = body.replace('<script type="text/x-mathjax-config">', MATHJAX_FONTS + '<script type="text/x-mathjax-config">', 1)
        head = f'<h1>{html.escape(title)}</h1>' + (f'<p class="semsim-desc">{html.escape(meta["description"])}</p>' if meta.get('description') else '')
        body = body.replace('<main>', '<main>' + head, 1) if '<main>' in body else body.replace('<body', '<body', 1)
        body = re.sub(r'(<body[^>]*>)', lambda m: m.group(1) + _nav(pages, rel, out) + NAV_CSS, body, count=1)
        body = body.replace('</main>', _pager(pages, rel) + '</main>', 1) if '</main>' in body else body.replace('</body>', _pager(pages, rel) + '</body>', 1)
        body = re.sub(r'<title>.*?</title>', f'<title>{html.escape(title)} – semsim</title>', body, count=1, flags=re.S)
        dest = out/rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(body, encoding='utf-8')
    return pages


def check_site(out: Path):
    "Fail if a page loads anything from the network or misses its local MathJax."
    bad = []
    for p in out.rglob('*.html'):
        t = p.read_text(encoding='utf-8')
        for m in NETWORK_RE.finditer(t): bad.append(f'{p.relative_to(out)}: loads from the network: {m.group(0)[:120]}')
        if 'mathjax/MathJax.js' not in t: bad.append(f'{p.relative_to(out)}: no local MathJax')
    return bad


def readme_text():
    "README.md generated from the processed `nbs/index.ipynb`."
    from nbconvert import MarkdownExporter
    proc = _proc()
    nb, meta = _load(proc/'index.ipynb')
    body, _ = MarkdownExporter().from_notebook_node(nb)
    body = body.replace('<!-- WARNING: THIS FILE WAS AUTOGENERATED! DO NOT EDIT! -->', '')
    head = f"# {meta.get('title', 'semsim')}\n\n" + (f"> {meta['description']}\n\n" if meta.get('description') else '')
    note = '<!-- WARNING: generated from nbs/index.ipynb by `make readme`; do not edit. -->\n\n'
    return note + head + re.sub(r'\n{3,}', '\n\n', body).strip() + '\n'


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(ROOT/'_site'))
    ap.add_argument('--readme', action='store_true', help='write README.md from nbs/index.ipynb')
    ap.add_argument('--check-readme', action='store_true', help='fail if README.md is stale')
    ap.add_argument('--site', action='store_true', help='render the site')
    a = ap.parse_args(argv)
    status = 0
    if a.readme or a.check_readme:
        new = readme_text()
        if a.readme: (ROOT/'README.md').write_text(new, encoding='utf-8'); print('wrote README.md')
        elif (ROOT/'README.md').read_text(encoding='utf-8') != new:
            print('README.md is stale: run `make readme` (it is generated from nbs/index.ipynb)'); status = 1
        else: print('README.md is fresh')
    if a.site:
        out = Path(a.out)
        pages = render_site(out)
        bad = check_site(out)
        for b in bad: print(b)
        print(f'rendered {len(pages)} pages into {out}' + (f'; {len(bad)} problems' if bad else ''))
        status = status or int(bool(bad))
    return status


if __name__ == '__main__': sys.exit(main())
