from docindex.cli import app

app()
