import sys

from deeplab_fast.cli import main

sys.exit(main())
