"""Mail to people about their own reps: the weekly digest and the too-far rate alerts, each
claimed in MailSent before it is sent, and each user's choice to turn them off (AccountSettings)."""
