from walship.cli import entry

entry()
