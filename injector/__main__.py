import sys

from injector.cli.main import main

sys.exit(main())
