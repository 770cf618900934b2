"""Everything a fresh database needs, idempotently: migrations, the seed
symbols, the default alert rules and an admin user."""

import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import OperationalError, connection

from alerts.services import alert_rules_seed
from market.services import symbols_seed
from market.storage import storage_mode


class Command(BaseCommand):
    help = "Migrate, load the seed symbols and default alert rules, and create the admin user."

    def handle(self, *args, **options):
        try:
            connection.ensure_connection()
        except OperationalError as error:
            raise CommandError(
                f"PostgreSQL at {settings.DATABASES['default']['HOST']}:{settings.DATABASES['default']['PORT']} "
                f"refused the connection: {str(error).strip().splitlines()[0]} (is it running? `make status`)"
            ) from None
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write(f"  migrations applied; time-series storage mode: {storage_mode()}")
        created = symbols_seed(tickers=settings.SYMBOLS)
        self.stdout.write(f"  symbols: {len(settings.SYMBOLS)} ({created} new)")
        self.stdout.write(f"  alert rules: {alert_rules_seed()} new")
        self._admin()

    def _admin(self):
        User = get_user_model()
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "admin")
        if User.objects.filter(username=username).exists():
            self.stdout.write(f"  admin user {username!r} exists")
            return
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        generated = password is None
        password = password or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email=os.environ.get("DJANGO_SUPERUSER_EMAIL", ""),
                                      password=password)
        if generated:
            self.stdout.write(self.style.WARNING(
                f"  admin user created: {username} / {password}  (shown once; change it with "
                f"`var/venv/bin/python manage.py changepassword {username}`)"
            ))
        else:
            self.stdout.write(f"  admin user {username!r} created with DJANGO_SUPERUSER_PASSWORD")
