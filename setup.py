"""setup.py for semsim, written by hand (nbdev 2's template imports pkg_resources, gone from modern setuptools).

Everything is read from settings.ini, the single source of the package definition."""
from configparser import ConfigParser
from pathlib import Path
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read(Path(__file__).parent/'settings.ini', encoding='utf-8')
c = cfg['DEFAULT']

licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
py_versions = '3.9 3.10 3.11 3.12 3.13'.split()
lic = licenses[c['license']]
min_python = c['min_python']
requirements = c.get('requirements', '').split()
dev_requirements = c.get('dev_requirements', '').split()
lab_requirements = c.get('lab_requirements', '').split()

setuptools.setup(
    name=c['lib_name'],
    version=c['version'],
    description=c['description'],
    long_description=(Path(__file__).parent/'README.md').read_text(encoding='utf-8') if (Path(__file__).parent/'README.md').exists() else c['description'],
    long_description_content_type='text/markdown',
    author=c['author'], author_email=c['author_email'],
    license=lic[0],
    classifiers=['Development Status :: ' + statuses[int(c['status'])],
                 'Intended Audience :: ' + c['audience'].title(),
                 'License :: ' + lic[1],
                 'Natural Language :: ' + c['language'].title()] +
                ['Programming Language :: Python :: ' + v for v in py_versions[py_versions.index(min_python):]],
    url=c['git_url'],
    project_urls={'Documentation': c['doc_host'].replace('%(user)s', c['user']) + c['doc_baseurl'].replace('%(repo)s', c['repo'])},
    packages=setuptools.find_packages(include=['semsim', 'semsim.*']),
    include_package_data=True,
    install_requires=requirements,
    extras_require={'dev': dev_requirements, 'lab': dev_requirements + lab_requirements},
    python_requires='>=' + min_python,
    zip_safe=False,
    entry_points={'console_scripts': c.get('console_scripts', '').split(),
                  'nbdev': [f"{c['lib_name']}={c['lib_name']}._modidx:d"]},
)
