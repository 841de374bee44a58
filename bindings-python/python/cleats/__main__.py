"""`python -m cleats work module:Worker ...`"""

from .cli import main

raise SystemExit(main())
